// MQTT.js (MQTT 5) over WebSocket against ringmq, run by broker/tests/tls_ws.rs: a subscriber
// and a publisher on the URL given (ws:// or wss://, the CA file for wss), QoS 1 and a
// retained message, a 100,000-byte payload. Usage: node ws.mjs URL CA_FILE
import fs from 'node:fs';
import mqtt from 'mqtt';

const [url, caFile] = process.argv.slice(2);
const ca = fs.readFileSync(caFile);
const fail = (why) => { console.error(`FAIL: ${why}`); process.exit(1); };
const timer = setTimeout(() => fail('timeout'), 15000);

function connect(clientId) {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect(url, {
      clientId, protocolVersion: 5, reconnectPeriod: 0, ca, rejectUnauthorized: true,
      wsOptions: { ca, rejectUnauthorized: true },
    });
    c.once('connect', () => resolve(c));
    c.once('error', reject);
  });
}

const tag = url.startsWith('wss') ? 'wss' : 'ws';
const pub = await connect(`js-${tag}-pub`);
await pub.publishAsync(`js${tag}/retained`, 'kept', { qos: 1, retain: true });
const sub = await connect(`js-${tag}-sub`);
const got = [];
sub.on('message', (topic, payload) => got.push(`${topic}:${payload.length}`));
await sub.subscribeAsync(`js${tag}/#`, { qos: 1 });
await pub.publishAsync(`js${tag}/big`, Buffer.alloc(100000, 7), { qos: 1 });
const want = [`js${tag}/retained:4`, `js${tag}/big:100000`];
for (let i = 0; i < 100 && got.length < want.length; i++) {
  await new Promise((r) => setTimeout(r, 50));
}
if (JSON.stringify(got) !== JSON.stringify(want)) fail(`got ${JSON.stringify(got)}`);
await pub.publishAsync(`js${tag}/retained`, '', { qos: 1, retain: true });
await pub.endAsync();
await sub.endAsync();
clearTimeout(timer);
console.log('OK');
