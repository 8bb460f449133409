// Placeholder for c3-backend: a tiny HTTP server on PORT (7780) with the incident's
// port-in-use handling and graceful shutdown.
const http = require('http');

const port = Number(process.env.PORT) || 7780;
const server = http.createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ service: 'c3-backend', ok: true }));
});

server.on('error', (err) => {
  if (err.code === 'EADDRINUSE') {
    console.error(`Port ${port} is already in use. Exiting.`);
    process.exit(1);
  }
  throw err;
});

server.listen(port, () => console.log(`c3-backend listening on ${port}`));

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
