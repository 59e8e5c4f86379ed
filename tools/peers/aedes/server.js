// aedes with aedes-persistence-redis: a Redis-backed MQTT broker to compare the Redis store
// with (BENCHMARKS.md "The Redis store"). Usage: node server.js MQTT_PORT REDIS_PORT
'use strict'
const net = require('net')
const persistence = require('aedes-persistence-redis')
const [port, redisPort] = process.argv.slice(2).map(Number)
const aedes = require('aedes')({
  persistence: persistence({ host: '127.0.0.1', port: redisPort, family: 4 })
})
net.createServer(aedes.handle).listen(port, '127.0.0.1', () => {
  console.log(`aedes on 127.0.0.1:${port}, Redis 127.0.0.1:${redisPort}`)
})
