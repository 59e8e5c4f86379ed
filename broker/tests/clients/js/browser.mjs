// A headless Chromium page (Debian's chromium driven by playwright-core) running MQTT.js's
// browser bundle over WebSocket against ringmq, run by broker/tests/tls_ws.rs: the page
// connects, subscribes, publishes QoS 1 to TOPIC and waits for its own message back; the
// test's mosquitto_sub on the TCP listener receives it too. Usage: node browser.mjs URL TOPIC
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const [url, topic] = process.argv.slice(2);
const here = path.dirname(fileURLToPath(import.meta.url));
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox'],
});
try {
  const page = await browser.newPage();
  await page.addScriptTag({ path: path.join(here, 'node_modules/mqtt/dist/mqtt.min.js') });
  const result = await page.evaluate(([url, topic]) => new Promise((resolve) => {
    const timer = setTimeout(() => resolve('timeout'), 10000);
    const c = mqtt.connect(url, { clientId: 'browser-page', protocolVersion: 5, reconnectPeriod: 0 });
    c.on('error', (e) => resolve(`error: ${e}`));
    c.on('message', (t, payload) => {
      clearTimeout(timer);
      c.end();
      resolve(`${t}:${payload}`);
    });
    c.on('connect', () => {
      c.subscribe(topic, { qos: 1 }, () => c.publish(topic, 'from-chromium', { qos: 1 }));
    });
  }), [url, topic]);
  if (result !== `${topic}:from-chromium`) {
    console.error(`FAIL: ${result}`);
    process.exit(1);
  }
  console.log('OK');
} finally {
  await browser.close();
}
