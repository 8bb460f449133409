// flyer-crawler-api: answers on PORT; closes gracefully on SIGINT (PM2's stop signal).
const http = require('http');
const { version } = require('./version');

const server = http.createServer((req, res) => {
  res.setHeader('Connection', 'close');
  res.end(`flyer-crawler ${version}\n`);
});
server.listen(process.env.PORT);
process.on('SIGINT', () => {
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 3000).unref();
});
