#!/usr/bin/env node
// kafkajs driver for tests/e2e/test_kafkajs.py.
//
//   node client.js < command.json
//
// Reads one command (JSON on stdin), runs it with kafkajs against
// cmd.brokers and prints one JSON result on stdout; exits 1 with
// {"error": ..., "name": e.name, "type": e.type, "code": e.code, "cause": ...}
// on stdout on failure (an authentication failure is name
// KafkaJSSASLAuthenticationError). Binary data crosses as base64; a null
// key/value stays null.
//
// Every command may carry cmd.ssl (true, or {ca, cert?, key?} as PEM text)
// and cmd.sasl ({mechanism: 'plain' | 'scram-sha-256' | 'scram-sha-512',
// username, password}), given to kafkajs as they are. Commands:
//
//   produce  {topic, codec, acks, partition?, records: [{key, value, headers: [[name, b64]], timestamp?}]}
//            -> {results: [{topicName, partition, errorCode, baseOffset}], codec}
//            (one producer.send() per call, so kafkajs sends one batch per partition
//             and record i of a partition sits at baseOffset + i)
//   consume  {topic, groupId, count, fromBeginning, seek?: {partition, offset}}
//            -> {records: [{partition, offset, key, value, headers, timestamp}],
//                committed: [{partition, offset}]}  (admin.fetchOffsets after the run)
//   offsetsByTimestamp {topic, timestamp} -> {offsets: [{partition, offset}]}
//   topicOffsets {topic} -> {offsets: [{partition, offset, low, high}]}
//   listTopics {} -> {topics: [name, ...]}  (sorted; Metadata for all topics,
//            so a topic the principal may not DESCRIBE is left out)
//
// consume also takes timeoutMs (default 30000): it returns what it read by
// then. A failed command (a produce refused with TOPIC_AUTHORIZATION_FAILED,
// a consumer crashed by GROUP_AUTHORIZATION_FAILED) reports the error's
// name and type and its cause's, and `types`: the `type` of every error
// down its `cause` (or `originalError`) chain, so a protocol error is found
// also when a KafkaJSNumberOfRetriesExceeded or another wrapper carries it.

'use strict'

const {
  Kafka, CompressionTypes, CompressionCodecs, logLevel,
} = require('kafkajs')
const SnappyCodec = require('kafkajs-snappy')
const LZ4Codec = require('kafkajs-lz4')
const zstd = require('@mongodb-js/zstd')

// kafkajs ships gzip only; the others are registered the way its docs say.
CompressionCodecs[CompressionTypes.Snappy] = SnappyCodec
CompressionCodecs[CompressionTypes.LZ4] = new LZ4Codec().codec
// @kafkajs/zstd needs a native build of cppzst that does not compile against
// Node 20's headers; @mongodb-js/zstd ships prebuilt N-API binaries in the
// registry, so this is a 4-line kafkajs codec on top of it.
CompressionCodecs[CompressionTypes.ZSTD] = () => ({
  async compress(encoder) { return zstd.compress(encoder.buffer) },
  async decompress(buffer) { return zstd.decompress(buffer) },
})

const CODECS = {
  none: CompressionTypes.None,
  gzip: CompressionTypes.GZIP,
  snappy: CompressionTypes.Snappy,
  lz4: CompressionTypes.LZ4,
  zstd: CompressionTypes.ZSTD,
}

const b64 = (buf) => (buf === null || buf === undefined ? null : Buffer.from(buf).toString('base64'))
const unb64 = (s) => (s === null || s === undefined ? null : Buffer.from(s, 'base64'))

function client(cmd) {
  return new Kafka({
    clientId: 'sluice-e2e-kafkajs',
    brokers: cmd.brokers,
    logLevel: logLevel.ERROR,
    connectionTimeout: 5000,
    requestTimeout: 20000,
    retry: { retries: 5, initialRetryTime: 100 },
    ...security(cmd),
  })
}

// TLS and SASL options, only those the command gives
function security(cmd) {
  const out = {}
  if (cmd.ssl === true) {
    out.ssl = true
  } else if (cmd.ssl) {
    out.ssl = {}
    for (const name of ['ca', 'cert', 'key']) if (cmd.ssl[name]) out.ssl[name] = cmd.ssl[name]
  }
  if (cmd.sasl) {
    out.sasl = { mechanism: cmd.sasl.mechanism, username: cmd.sasl.username, password: cmd.sasl.password }
  }
  return out
}

async function produce(cmd) {
  if (!(cmd.codec in CODECS)) throw new Error(`unknown codec ${cmd.codec}`)
  const producer = client(cmd).producer({ allowAutoTopicCreation: true, idempotent: false })
  await producer.connect()
  try {
    const messages = cmd.records.map((r) => {
      const headers = {}
      for (const [name, value] of r.headers) headers[name] = unb64(value)
      const m = { key: unb64(r.key), value: unb64(r.value), headers }
      if (cmd.partition !== undefined && cmd.partition !== null) m.partition = cmd.partition
      if (r.timestamp !== undefined && r.timestamp !== null) m.timestamp = String(r.timestamp)
      return m
    })
    const results = await producer.send({
      topic: cmd.topic, acks: cmd.acks ?? -1, compression: CODECS[cmd.codec], messages,
    })
    return {
      codec: cmd.codec,
      results: results.map((r) => ({
        topicName: r.topicName, partition: r.partition, errorCode: r.errorCode, baseOffset: r.baseOffset,
      })),
    }
  } finally {
    await producer.disconnect()
  }
}

function headersOf(message) {
  // kafkajs decodes headers into an object; a repeated name becomes an array
  const out = []
  for (const [name, value] of Object.entries(message.headers || {})) {
    for (const v of Array.isArray(value) ? value : [value]) out.push([name, b64(v)])
  }
  return out
}

async function consume(cmd) {
  const kafka = client(cmd)
  const consumer = kafka.consumer({
    groupId: cmd.groupId, maxWaitTimeInMs: 200, sessionTimeout: 10000, heartbeatInterval: 1000,
    allowAutoTopicCreation: false,
  })
  const records = []
  const deadline = Date.now() + (cmd.timeoutMs ?? 30000)
  await consumer.connect()
  try {
    await consumer.subscribe({ topics: [cmd.topic], fromBeginning: !!cmd.fromBeginning })
    let done
    const finished = new Promise((resolve) => { done = resolve })
    let crashed = null
    consumer.on(consumer.events.CRASH, (e) => { crashed = e.payload.error; done() })
    // eachBatch with manual resolve: exactly `count` records are marked
    // consumed (and committed), so a later member of the group resumes right
    // after the last record returned here
    await consumer.run({
      autoCommit: true,
      autoCommitThreshold: 1,
      eachBatchAutoResolve: false,
      eachBatch: async ({ batch, resolveOffset, commitOffsetsIfNecessary, isRunning, isStale }) => {
        for (const message of batch.messages) {
          if (records.length >= cmd.count || !isRunning() || isStale()) break
          records.push({
            partition: batch.partition,
            offset: Number(message.offset),
            key: b64(message.key),
            value: b64(message.value),
            headers: headersOf(message),
            timestamp: Number(message.timestamp),
          })
          resolveOffset(message.offset)
        }
        await commitOffsetsIfNecessary()
        if (records.length >= cmd.count) done()
      },
    })
    if (cmd.seek) consumer.seek({ topic: cmd.topic, partition: cmd.seek.partition, offset: String(cmd.seek.offset) })
    const timer = setInterval(() => { if (Date.now() > deadline) done() }, 100)
    await finished
    clearInterval(timer)
    if (crashed) throw crashed
  } finally {
    await consumer.disconnect()
  }
  const admin = kafka.admin()
  await admin.connect()
  let committed
  try {
    const [topicOffsets] = await admin.fetchOffsets({ groupId: cmd.groupId, topics: [cmd.topic] })
    committed = topicOffsets.partitions.map((p) => ({ partition: p.partition, offset: Number(p.offset) }))
  } finally {
    await admin.disconnect()
  }
  return { records, committed }
}

async function withAdmin(cmd, fn) {
  const admin = client(cmd).admin()
  await admin.connect()
  try {
    return await fn(admin)
  } finally {
    await admin.disconnect()
  }
}

async function offsetsByTimestamp(cmd) {
  return withAdmin(cmd, async (admin) => {
    const offsets = await admin.fetchTopicOffsetsByTimestamp(cmd.topic, cmd.timestamp)
    return { offsets: offsets.map((o) => ({ partition: o.partition, offset: Number(o.offset) })) }
  })
}

async function topicOffsets(cmd) {
  return withAdmin(cmd, async (admin) => {
    const offsets = await admin.fetchTopicOffsets(cmd.topic)
    return {
      offsets: offsets.map((o) => ({
        partition: o.partition, offset: Number(o.offset), low: Number(o.low), high: Number(o.high),
      })),
    }
  })
}

async function listTopics(cmd) {
  return withAdmin(cmd, async (admin) => ({ topics: (await admin.listTopics()).sort() }))
}

const COMMANDS = { produce, consume, offsetsByTimestamp, topicOffsets, listTopics }

// the type of e and of every error it wraps (cause, originalError)
function errorTypes(e) {
  const out = []
  const seen = new Set()
  for (let cur = e; cur && typeof cur === 'object' && !seen.has(cur);
    cur = cur.cause || cur.originalError) {
    seen.add(cur)
    if (cur.type) out.push(cur.type)
  }
  return out
}

// stdout is a pipe: exit only once the result is flushed (process.exit right
// after write() truncates large results)
function finish(result, code) {
  process.stdout.write(JSON.stringify(result) + '\n', () => process.exit(code))
}

async function main() {
  const chunks = []
  for await (const chunk of process.stdin) chunks.push(chunk)
  const cmd = JSON.parse(Buffer.concat(chunks).toString('utf8'))
  const run = COMMANDS[cmd.command]
  if (!run) throw new Error(`unknown command ${cmd.command}`)
  return run(cmd)
}

main().then(
  (result) => finish(result, 0),
  (e) => finish({
    error: String(e && e.stack ? e.stack : e),
    name: e && e.name,
    type: e && e.type,
    code: e && e.code,
    cause: e && e.cause ? { name: e.cause.name, type: e.cause.type, message: String(e.cause.message) } : null,
    types: errorTypes(e),
  }, 1),
)
