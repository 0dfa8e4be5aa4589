import grpc from 'k6/net/grpc';
import { check, sleep, fail } from 'k6';
import { Counter } from 'k6/metrics';

const client = new grpc.Client();
const hits = new Counter('model_hits');

export function initConnect() {} // placeholder so the export exists

export function vuConnectAndCheck() {
  client.connect(__ENV.ADDR, { plaintext: true, reflect: true, timeout: '5s' });
  const r = client.invoke('grpc.health.v1.Health/Check', { service: '' }, { timeout: '5s', metadata: { 'x-who': 'model' } });
  if (r.status !== grpc.StatusOK) fail(`status ${r.status}`);
  const ok = check(r, { 'serving': (x) => x.message.status === 'SERVING' });
  hits.add(2, { kind: 'test' });
  globalThis.result = { ok, status: r.message.status, hasError: r.error !== null };
}

export function vuUnknownService() {
  client.connect(__ENV.ADDR, { plaintext: true, reflect: true });
  const r = client.invoke('grpc.health.v1.Health/Check', { service: 'nope' });
  globalThis.result = { status: r.status, code: r.error.code, message: r.error.message, notFound: r.status === grpc.StatusNotFound };
}

export function vuInvokeBeforeConnect() {
  new grpc.Client().invoke('grpc.health.v1.Health/Check', {});
}

export function vuLoad() {
  client.load(null, 'x.proto');
}

export function vuCounter() {
  new Counter('late');
}

export function vuUnknownConnectParam() {
  client.connect(__ENV.ADDR, { plaintext: true, insecure: true });
}

export function vuFail() {
  fail('boom');
}

export function vuSleep() {
  sleep(0.2);
}

export function vuUnknownField() {
  client.connect(__ENV.ADDR, { plaintext: true, reflect: true });
  client.invoke('grpc.health.v1.Health/Check', { servce: '' });
}
