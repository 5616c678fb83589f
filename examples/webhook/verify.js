// Verify an event forwarded by wxpay-notify's forward handler (Node.js).
//
// Usage as a script (for the project's own test): node verify.js SECRET TIMESTAMP SIGNATURE < body
"use strict";
const crypto = require("crypto");

// verify throws unless the signature is valid and the timestamp fresh.
// rawBody is the request body as received (a Buffer): verify before
// parsing, and use the Idempotency-Key header as the unique key of what you
// do with the event.
function verify(secret, timestamp, signature, rawBody, toleranceSec = 300) {
  if (!/^[0-9]+$/.test(timestamp || "") || Math.abs(Date.now() / 1000 - Number(timestamp)) > toleranceSec) {
    throw new Error(`timestamp missing or more than ${toleranceSec} s off`);
  }
  const expected = Buffer.from("v1=" + crypto.createHmac("sha256", secret).update(timestamp + ".").update(rawBody).digest("hex"));
  const got = Buffer.from(signature || "");
  if (got.length !== expected.length || !crypto.timingSafeEqual(got, expected)) {
    throw new Error("bad signature");
  }
}

module.exports = { verify };

if (require.main === module) {
  const chunks = [];
  process.stdin.on("data", (c) => chunks.push(c));
  process.stdin.on("end", () => {
    try {
      verify(process.argv[2], process.argv[3], process.argv[4], Buffer.concat(chunks));
      console.log("ok");
    } catch (e) {
      console.log(e.message);
      process.exitCode = 1;
    }
  });
}
