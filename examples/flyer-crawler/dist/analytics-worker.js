// Placeholder for flyer-crawler-analytics-worker: stays alive and reports a heartbeat, exits cleanly on signals.
const queue = process.env.QUEUE_NAME || 'analytics';
const timer = setInterval(() => console.log(`flyer-crawler-analytics-worker: idle, queue ${queue}`), 60000);

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    clearInterval(timer);
    process.exit(0);
  });
}
