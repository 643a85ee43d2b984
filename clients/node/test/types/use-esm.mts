// Compiled (not run) by producer.test.js: ESM use of the declarations.
import kpld, { Producer, ConnectionError, DEFAULT_SOCKET_PATH, Sent, type PutRecordResult, type Accepting } from 'kpld';

const p: Producer = new kpld.Producer({ socketPath: DEFAULT_SOCKET_PATH });
const r: Promise<PutRecordResult> = p.putRecord({ stream: 's', partitionKey: 'k', data: 'x' });
r.catch((e: unknown) => {
  if (e instanceof ConnectionError) console.log(e.code);
});
// @ts-expect-error data must be bytes or a string
p.putRecord({ stream: 's', partitionKey: 'k', data: 5 });
const a: kpld.Accepting<PutRecordResult> | Accepting<PutRecordResult> = p.putRecord({ stream: 's', partitionKey: 'k', data: 'y' });
void a.accepted().then(() => undefined);
const sent: Sent = p.send('s', [{ partitionKey: 'k', data: 'z' }]);
void sent.accepted();
