// flyer-crawler-analytics-worker: rolls up crawl statistics (here: idles).
const { version } = require('./version');
console.log(`analytics ${version} ready`);
setInterval(() => {}, 1 << 30);
process.on('SIGINT', () => process.exit(0));
