// PM2 ecosystem for flyer-crawler, deployed to /srv/flyer-crawler on the production host.
// Start by hand with:  pm2 start ecosystem.config.cjs --env production
// (reconcile.toml selects env_production the same way).
//
// `cwd` is the deploy directory, so script and log paths resolve the same wherever this
// repository is checked out (the dist/ placeholders here mirror /srv/flyer-crawler/dist/).
//
// Every safety setting below traces to one of the two incidents behind reconcile:
//   exec_mode 'fork' always explicit      003: instances 1 without exec_mode ran in cluster mode
//   max_restarts / min_uptime             003: 3,446 restarts before anyone noticed
//   restart_delay >= 2000                 003: ports need time to be released between restarts
//   kill_timeout                          003: graceful shutdown before SIGKILL
//   out_file / error_file / date format   003: the logs were what explained the outage
//   namespace 'flyer-crawler'             000: a deploy killed stock-alert; own one namespace only

module.exports = {
  apps: [
    {
      name: 'flyer-crawler-api',
      namespace: 'flyer-crawler',
      cwd: '/srv/flyer-crawler',
      script: 'dist/server.js',
      node_args: ['--enable-source-maps'],
      exec_mode: 'fork',
      instances: 1,
      autorestart: true,
      max_restarts: 10,
      min_uptime: 5000,
      restart_delay: 2000,
      kill_timeout: 10000,
      max_memory_restart: '512M',
      watch: false,
      merge_logs: true,
      out_file: 'logs/flyer-crawler-api-out.log',
      error_file: 'logs/flyer-crawler-api-error.log',
      log_date_format: 'YYYY-MM-DD HH:mm:ss Z',
      env: {
        NODE_ENV: 'development',
        PORT: 3000,
        LOG_LEVEL: 'debug',
        DB_HOST: '127.0.0.1',
        DB_NAME: 'flyer_crawler_dev',
        REDIS_URL: 'redis://127.0.0.1:6379/0',
      },
      env_production: {
        NODE_ENV: 'production',
        PORT: 3001,
        LOG_LEVEL: 'info',
        DB_NAME: 'flyer_crawler',
        REDIS_URL: 'redis://127.0.0.1:6379/1',
      },
      env_test: {
        NODE_ENV: 'test',
        PORT: 3002,
        LOG_LEVEL: 'warn',
        DB_NAME: 'flyer_crawler_test',
        REDIS_URL: 'redis://127.0.0.1:6379/2',
      },
    },
    {
      name: 'flyer-crawler-worker',
      namespace: 'flyer-crawler',
      cwd: '/srv/flyer-crawler',
      script: 'dist/worker.js',
      node_args: ['--enable-source-maps'],
      exec_mode: 'fork',
      instances: 1,
      autorestart: true,
      max_restarts: 10,
      min_uptime: 10000,
      restart_delay: 5000,
      kill_timeout: 30000,
      max_memory_restart: '1G',
      watch: false,
      merge_logs: true,
      out_file: 'logs/flyer-crawler-worker-out.log',
      error_file: 'logs/flyer-crawler-worker-error.log',
      log_date_format: 'YYYY-MM-DD HH:mm:ss Z',
      env: {
        NODE_ENV: 'development',
        LOG_LEVEL: 'debug',
        DB_HOST: '127.0.0.1',
        DB_NAME: 'flyer_crawler_dev',
        REDIS_URL: 'redis://127.0.0.1:6379/0',
        QUEUE_NAME: 'flyers',
        WORKER_CONCURRENCY: '1',
      },
      env_production: {
        NODE_ENV: 'production',
        LOG_LEVEL: 'info',
        DB_NAME: 'flyer_crawler',
        REDIS_URL: 'redis://127.0.0.1:6379/1',
        WORKER_CONCURRENCY: '4',
      },
      env_test: {
        NODE_ENV: 'test',
        LOG_LEVEL: 'warn',
        DB_NAME: 'flyer_crawler_test',
        REDIS_URL: 'redis://127.0.0.1:6379/2',
        QUEUE_NAME: 'flyers-test',
      },
    },
    {
      name: 'flyer-crawler-analytics-worker',
      namespace: 'flyer-crawler',
      cwd: '/srv/flyer-crawler',
      script: 'dist/analytics-worker.js',
      node_args: ['--enable-source-maps'],
      exec_mode: 'fork',
      instances: 1,
      autorestart: true,
      max_restarts: 10,
      min_uptime: 10000,
      restart_delay: 5000,
      kill_timeout: 30000,
      max_memory_restart: '768M',
      watch: false,
      merge_logs: true,
      out_file: 'logs/flyer-crawler-analytics-worker-out.log',
      error_file: 'logs/flyer-crawler-analytics-worker-error.log',
      log_date_format: 'YYYY-MM-DD HH:mm:ss Z',
      env: {
        NODE_ENV: 'development',
        LOG_LEVEL: 'debug',
        DB_HOST: '127.0.0.1',
        DB_NAME: 'flyer_crawler_dev',
        REDIS_URL: 'redis://127.0.0.1:6379/0',
        QUEUE_NAME: 'analytics',
        ANALYTICS_FLUSH_INTERVAL_MS: '60000',
      },
      env_production: {
        NODE_ENV: 'production',
        LOG_LEVEL: 'info',
        DB_NAME: 'flyer_crawler',
        REDIS_URL: 'redis://127.0.0.1:6379/1',
      },
      env_test: {
        NODE_ENV: 'test',
        LOG_LEVEL: 'warn',
        DB_NAME: 'flyer_crawler_test',
        REDIS_URL: 'redis://127.0.0.1:6379/2',
        QUEUE_NAME: 'analytics-test',
      },
    },
  ],
};
