// flyer-crawler's three apps, as deployed by incident 000's job (see deploy.sh).
// Paths are relative to this directory, so the example runs wherever it is checked out.
// FLYER_PORT only lets tests pick a free port; production uses 3000.
const logs = (name) => ({
  out_file: `logs/${name}-out.log`,
  error_file: `logs/${name}-error.log`,
  log_date_format: 'YYYY-MM-DD HH:mm:ss Z',
  merge_logs: true,
});

const common = {
  namespace: 'flyer-crawler',
  cwd: __dirname,
  exec_mode: 'fork',
  instances: 1,
  autorestart: true,
  max_restarts: 10,
  min_uptime: 5000,
  restart_delay: 2000,
  kill_timeout: 5000,
  watch: false,
};

module.exports = {
  apps: [
    {
      ...common,
      ...logs('flyer-crawler-api'),
      name: 'flyer-crawler-api',
      script: 'dist/server.js',
      env: { NODE_ENV: 'development', PORT: process.env.FLYER_PORT || 3000 },
      env_production: { NODE_ENV: 'production' },
    },
    {
      ...common,
      ...logs('flyer-crawler-worker'),
      name: 'flyer-crawler-worker',
      script: 'dist/worker.js',
      env: { NODE_ENV: 'development', QUEUE: 'crawl' },
      env_production: { NODE_ENV: 'production' },
    },
    {
      ...common,
      ...logs('flyer-crawler-analytics-worker'),
      name: 'flyer-crawler-analytics-worker',
      script: 'dist/analytics-worker.js',
      env: { NODE_ENV: 'development' },
      env_production: { NODE_ENV: 'production' },
    },
  ],
};
