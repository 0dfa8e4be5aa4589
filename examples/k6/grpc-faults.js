// gRPC faults: half of catalog's gRPC calls fail with UNAVAILABLE for 14s
// while 2 VUs call its health service. Reflection is excluded so that
// clients resolving methods by reflection keep working.
//
//   faultline run --local -- k6 run examples/k6/grpc-faults.js          (after make demo-up)
import grpc from 'k6/net/grpc';
import { check } from 'k6';
import { PodDisruptor } from '../../k6ext/disruptor.js';

const CATALOG_GRPC = __ENV.CATALOG_GRPC || '198.18.10.2:9000';
const client = new grpc.Client();

export const options = {
  scenarios: {
    disrupt: { executor: 'shared-iterations', iterations: 1, vus: 1, exec: 'disrupt' },
    load: { executor: 'constant-vus', vus: 2, duration: '10s', startTime: '2s', exec: 'load' },
  },
  thresholds: {
    'checks{check:answered OK or injected UNAVAILABLE}': ['rate>0.99'],
  },
};

export function disrupt() {
  const catalog = new PodDisruptor({ namespace: __ENV.CATALOG_NAMESPACE || 'demo', select: { labels: { app: 'catalog' } } });
  catalog.injectGrpcFaults({
    port: 9000,
    errorRate: 0.5,
    statusCode: grpc.StatusUnavailable,
    statusMessage: 'catalog is overloaded',
    exclude: 'grpc.reflection.v1.ServerReflection,grpc.reflection.v1alpha.ServerReflection',
  }, '14s');
}

let connected = false;

export function load() {
  if (!connected) {
    client.connect(CATALOG_GRPC, { plaintext: true, reflect: true, timeout: '5s' });
    connected = true;
  }
  const r = client.invoke('grpc.health.v1.Health/Check', {});
  check(r, {
    'answered OK or injected UNAVAILABLE': (x) => x.status === grpc.StatusOK
      || (x.status === grpc.StatusUnavailable && x.error.message === 'catalog is overloaded'),
  });
}
