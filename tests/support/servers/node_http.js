// Node's http server on the port given as its argument, bound by Node
// itself (listen(port): dual-stack [::]:PORT, O_NONBLOCK before bind);
// it knows nothing of LISTEN_FDS. Answers "pid=PID" and closes; on
// SIGTERM stops listening and exits once the requests in flight are
// answered.
const http = require('http');
const server = http.createServer((request, response) => {
    response.setHeader('Connection', 'close');
    response.end('pid=' + process.pid + '\n');
});
server.listen(Number(process.argv[2]));
process.on('SIGTERM', () => server.close());
