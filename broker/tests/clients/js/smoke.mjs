// MQTT.js (MQTT 5) smoke test against ringmq, run by broker/tests/features.rs:
// retained message on subscribe, user properties and content type passed through,
// subscription identifier, a shared subscription, publisher and subscriber on different
// shards. Usage: node smoke.mjs PORT SUB_ID PUB_ID
import mqtt from 'mqtt';

const [port, subId, pubId] = process.argv.slice(2);
const url = `mqtt://127.0.0.1:${port}`;
const fail = (why) => { console.error(`FAIL: ${why}`); process.exit(1); };
const timer = setTimeout(() => fail('timeout'), 15000);

function connect(clientId) {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect(url, { clientId, protocolVersion: 5, reconnectPeriod: 0 });
    c.once('connect', (connack) => resolve([c, connack]));
    c.once('error', reject);
  });
}

const [pub] = await connect(pubId);
await pub.publishAsync('js/retained', 'kept', { qos: 1, retain: true });
const [sub, connack] = await connect(subId);
const caps = connack.properties || {};
if (caps.sharedSubscriptionAvailable === false || caps.retainAvailable === false) {
  fail(`capabilities ${JSON.stringify(caps)}`);
}
const got = [];
sub.on('message', (topic, payload, packet) => got.push({ topic, payload: payload.toString(), packet }));
await sub.subscribeAsync('js/#', { qos: 1, properties: { subscriptionIdentifier: 5 } });
await sub.subscribeAsync('$share/js/jsq/#', { qos: 1 });
await pub.publishAsync('js/live', 'hello', {
  qos: 1,
  properties: { userProperties: { k: 'v' }, contentType: 'text/plain' },
});
await pub.publishAsync('jsq/x', 'shared', { qos: 1 });
while (got.length < 3) await new Promise((r) => setTimeout(r, 20));

const by = Object.fromEntries(got.map((m) => [m.topic, m]));
const retained = by['js/retained'];
if (!retained || retained.payload !== 'kept' || !retained.packet.retain) fail('retained on subscribe');
const live = by['js/live'];
if (!live || live.payload !== 'hello') fail('live message');
const p = live.packet.properties || {};
if (!p.userProperties || p.userProperties.k !== 'v') fail(`user properties ${JSON.stringify(p)}`);
if (p.contentType !== 'text/plain') fail('content type');
const ids = [].concat(p.subscriptionIdentifier);
if (!ids.includes(5)) fail(`subscription identifier ${JSON.stringify(p.subscriptionIdentifier)}`);
if (!by['jsq/x'] || by['jsq/x'].payload !== 'shared') fail('shared subscription');
clearTimeout(timer);
await pub.endAsync();
await sub.endAsync();
console.log('MQTT.js v5: retained, user properties, content type, subscription id, shared: ok');
