// The same two apps after incident 003, with its "Configuration Standards" applied to both.
// `reconcile lint ecosystem.fixed.config.cjs` is clean.

module.exports = {
  apps: [
    {
      name: 'c3-backend',
      namespace: 'c3',
      cwd: '/home/jordan/projects/c3-backend',
      script: 'server.js',
      exec_mode: 'fork',
      instances: 1,
      watch: false,
      autorestart: true,
      max_restarts: 10,
      min_uptime: 5000,
      restart_delay: 2000,
      kill_timeout: 5000,
      merge_logs: true,
      out_file: 'logs/c3-backend-out.log',
      error_file: 'logs/c3-backend-error.log',
      log_date_format: 'YYYY-MM-DD HH:mm:ss',
      env: {
        NODE_ENV: 'production',
        PORT: 7780,
      },
    },
    {
      name: 'chinvex-gateway',
      namespace: 'c3',
      cwd: '/home/jordan/projects/c3-backend',
      script: 'gateway/run_gateway.py',
      interpreter: 'python3',
      args: '--host 127.0.0.1 --port 7778',
      exec_mode: 'fork',
      instances: 1,
      watch: false,
      autorestart: true,
      max_restarts: 10,
      min_uptime: 10000,
      restart_delay: 2000,
      kill_timeout: 5000,
      merge_logs: true,
      out_file: 'logs/chinvex-gateway-out.log',
      error_file: 'logs/chinvex-gateway-error.log',
      log_date_format: 'YYYY-MM-DD HH:mm:ss',
      env: {
        GATEWAY_CONTEXTS: '10',
        EMBEDDING_MODEL: 'text-embedding-3-small',
      },
    },
  ],
};
