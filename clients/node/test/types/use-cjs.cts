// Compiled (not run) by producer.test.js: typical CommonJS use of the declarations.
import { Producer, RecordBatch, RecordFailedError, ConnectionError, BusyError, KpldError, PutRecordResult, PutRecordSettled } from 'kpld';

async function main(): Promise<void> {
  const p = new Producer({ socketPath: '/tmp/kpld.sock', busyIfFull: true, connectTimeoutMs: 5000 });
  p.on('error', (err) => console.error(err.code, err.message));
  p.on('recordFailed', (err, record, stream) => console.error(err.code, err.attempts.length, record?.partitionKey, stream));
  p.on('connect', (info) => console.log(info.serverVersion, info.maxFrameSize));
  try {
    const r: PutRecordResult = await p.putRecord({ stream: 's', partitionKey: 'k', data: Buffer.from('x') });
    console.log(r.shardId, r.sequenceNumber, r.subSequenceNumber, r.attempts[0].delayMs, r.attempts[0].durationMs);
  } catch (e) {
    if (e instanceof BusyError) console.log('busy', e.attempts);
    else if (e instanceof RecordFailedError) console.log(e.code, e.attempts.map((a) => a.errorCode));
    else if (e instanceof ConnectionError || e instanceof KpldError) console.log(e.code);
  }
  const rs: PutRecordSettled[] = await p.putRecords('s', [
    { partitionKey: 'a', data: 'text' },
    { partitionKey: 'b', data: new Uint8Array([1, 2]), explicitHashKey: '12345' },
  ]);
  for (const r of rs) {
    if (r.status === 'fulfilled') console.log(r.value.shardId);
    else console.log(r.reason.code);
  }
  const rb: RecordBatch = await p.putBatch('s', [{ partitionKey: 'd', data: 'batched' }]);
  console.log(rb.length, rb.succeeded, rb.failed, rb.error(0)?.code, rb.failures().length, rb.settled().length);
  if (rb.failed === 0) console.log(rb.result(0).shardId);
  const sent = p.send('s', [{ partitionKey: 'c', data: 'fire and forget' }]);
  await sent.accepted();
  const put = p.putRecord({ stream: 's', partitionKey: 'k', data: 'accepted?' });
  try {
    await put.accepted();
  } catch (e) {
    if (e instanceof RecordFailedError && e.refused) console.log('refused', e.code);
  }
  await put.catch(() => undefined);
  await p.putBatch('s', [{ partitionKey: 'e', data: 'x' }]).accepted();
  console.log(p.outstanding, p.counters.failed, p.connected, p.serverInfo?.maxRecordSize);
  await p.flush();
  await p.stats();
  await p.close();
}
void main;
