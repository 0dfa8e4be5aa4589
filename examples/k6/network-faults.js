// Network faults: for 12s, catalog refuses half of the new TCP connections
// to port 8080 with a RST, while 2 VUs open a new connection per request.
//
//   faultline run --local -- k6 run examples/k6/network-faults.js       (after make demo-up)
import http from 'k6/http';
import { PodDisruptor } from '../../k6ext/disruptor.js';

const CATALOG = __ENV.CATALOG_URL || 'http://198.18.10.2:8080';

export const options = {
  scenarios: {
    disrupt: { executor: 'shared-iterations', iterations: 1, vus: 1, exec: 'disrupt' },
    load: { executor: 'constant-vus', vus: 2, duration: '8s', startTime: '2s', exec: 'load' },
  },
  thresholds: {
    http_req_failed: ['rate>0.2', 'rate<0.8'],
  },
};

export function disrupt() {
  const catalog = new PodDisruptor({ namespace: __ENV.CATALOG_NAMESPACE || 'demo', select: { labels: { app: 'catalog' } } });
  catalog.injectNetworkFaults({ port: 8080, protocol: 'tcp', dropRate: 0, resetRate: 0.5 }, '12s');
}

export function load() {
  http.get(`${CATALOG}/health`, { headers: { Connection: 'close' }, timeout: '5s' });
}
