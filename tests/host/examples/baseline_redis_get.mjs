// The baseline of docs/PERFORMANCE.md "Store round trips": a Node.js HTTP server doing what the
// app's notify route does for a duplicate notification at the store — one Redis GET of the
// order's payment fact — and nothing else (no signature check), so that `load_spin`
// (LOAD_BASELINE) can set the route beside a plain process on the same Redis.
//
//   REDIS_PORT=6390 PORT=8090 node tests/host/examples/baseline_redis_get.mjs
//
// `POST /notify/{order_no}` reads the body, GETs `order:{order_no}:paid` on one persistent
// connection (requests pipelined, answers in order, as a Redis client library does) and answers
// WeChat's SUCCESS XML when the fact exists, 404 otherwise. No dependencies: RESP by hand.
import http from "node:http";
import net from "node:net";

const redisPort = Number(process.env.REDIS_PORT ?? 6379);
const port = Number(process.env.PORT ?? 8090);
const SUCCESS =
  "<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>";

const redis = net.connect(redisPort, "127.0.0.1");
redis.setNoDelay(true);
const waiting = [];
let buffered = Buffer.alloc(0);

// Answers to GET: `$<len>\r\n<bytes>\r\n` or `$-1\r\n` (absent); anything else is an error.
redis.on("data", (chunk) => {
  buffered = Buffer.concat([buffered, chunk]);
  for (;;) {
    const end = buffered.indexOf("\r\n");
    if (end < 0) return;
    const head = buffered.subarray(0, end).toString();
    if (head[0] !== "$") {
      waiting.shift()?.(new Error(`redis: ${head}`), null);
      buffered = buffered.subarray(end + 2);
      continue;
    }
    const len = Number(head.slice(1));
    if (len < 0) {
      buffered = buffered.subarray(end + 2);
      waiting.shift()?.(null, null);
      continue;
    }
    if (buffered.length < end + 2 + len + 2) return;
    const value = buffered.subarray(end + 2, end + 2 + len);
    buffered = buffered.subarray(end + 2 + len + 2);
    waiting.shift()?.(null, value);
  }
});

function get(key) {
  return new Promise((resolve, reject) => {
    waiting.push((err, value) => (err ? reject(err) : resolve(value)));
    redis.write(`*2\r\n$3\r\nGET\r\n$${Buffer.byteLength(key)}\r\n${key}\r\n`);
  });
}

http
  .createServer((req, res) => {
    req.resume();
    req.on("end", async () => {
      const orderNo = (req.url ?? "").split("/")[2] ?? "";
      try {
        const paid = await get(`order:${orderNo}:paid`);
        res.writeHead(paid ? 200 : 404, { "content-type": "text/xml" });
        res.end(paid ? SUCCESS : "");
      } catch (e) {
        res.writeHead(500);
        res.end(String(e));
      }
    });
  })
  .listen(port, "127.0.0.1", () => console.log(`baseline on 127.0.0.1:${port}`));
