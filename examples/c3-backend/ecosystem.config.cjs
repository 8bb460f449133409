// c3-backend and chinvex-gateway exactly as they ran before incident 003 (crash loops,
// 3,446 restarts, a single-instance app silently in cluster mode). `reconcile lint` rejects it:
//   exec-mode      c3-backend has instances: 1 and no exec_mode, so PM2 runs it in CLUSTER mode;
//                  chinvex-gateway leaves exec_mode implicit too
//   min-uptime     neither app sets min_uptime (PM2's default of 1 s is shorter than the
//                  gateway's warmup, so its crashes never counted as unstable)
//   restart-delay  c3-backend waits only 1000 ms; the gateway does not wait at all
//   max-restarts   chinvex-gateway never gives up
// ecosystem.fixed.config.cjs is the same file after the fix.

module.exports = {
  apps: [
    {
      name: 'c3-backend',
      namespace: 'c3',
      cwd: '/home/jordan/projects/c3-backend',
      script: 'server.js',
      watch: false,
      instances: 1,
      autorestart: true,
      max_restarts: 10,
      restart_delay: 1000,
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
      autorestart: true,
      env: {
        GATEWAY_CONTEXTS: '10',
        EMBEDDING_MODEL: 'text-embedding-3-small',
      },
    },
  ],
};
