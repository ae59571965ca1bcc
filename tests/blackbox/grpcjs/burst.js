// grpcjs/burst.js — @grpc/grpc-js (from npm, the copy tests/blackbox/reflection
// installs; run with NODE_PATH=tests/blackbox/reflection/node_modules) on one
// channel: OVER CreateUser calls whose 5 MiB message is over the server's
// limit, then BURST concurrent health checks.  Messages are raw bytes, so no
// generated code is needed.  Prints the count of each status as JSON.
//
//   node burst.js ADDR OVER BURST
'use strict';
const grpc = require('@grpc/grpc-js');

const [addr, over, burst] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4])];
const client = new grpc.Client(addr, grpc.credentials.createInsecure());
const raw = (b) => b;

function varint(n) {
  const out = [];
  while (n >= 0x80) {
    out.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return Buffer.from(out);
}

function unary(path, msg) {
  return new Promise((resolve) => {
    client.makeUnaryRequest(path, raw, raw, msg, new grpc.Metadata(), { deadline: Date.now() + 20000 },
      (err) => resolve(err ? grpc.status[err.code] : 'OK'));
  });
}

(async () => {
  const counts = {};
  const add = (c) => { counts[c] = (counts[c] || 0) + 1; };
  const name = Buffer.alloc(5 << 20, 0x78);
  const big = Buffer.concat([Buffer.from([0x12]), varint(name.length), name]); // CreateUserRequest.name
  for (let i = 0; i < over; i++)
    add(await unary('/bazaar.v1.UserService/CreateUser', big));
  const calls = [];
  for (let i = 0; i < burst; i++)
    calls.push(unary('/grpc.health.v1.Health/Check', Buffer.alloc(0)));
  (await Promise.all(calls)).forEach(add);
  client.close();
  console.log(JSON.stringify(counts));
})();
