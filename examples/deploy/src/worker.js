// flyer-crawler-worker: takes crawl jobs off the queue (here: idles).
const { version } = require('./version');
console.log(`worker ${version} ready on ${process.env.QUEUE}`);
setInterval(() => {}, 1 << 30);
process.on('SIGINT', () => process.exit(0));
