// The dependency-timeout incident as a k6 test: catalog gets 900ms ± 150ms
// for 40s while 5 VUs load recommendations, which calls catalog 4 times per
// request with a 1s timeout. The threshold is the SLO the incident breaks:
// it fails without retries and holds with RETRIES=3.
//
//   faultline run --local -- k6 run examples/k6/timeout-incident.js     (after make demo-up)
//   RECOMMENDATIONS_URL=http://recommendations.shop FAULTLINE_ADDR=... k6 run examples/k6/timeout-incident.js
//
// Only the import line differs from an xk6-disruptor script.
import http from 'k6/http';
import { ServiceDisruptor } from '../../k6ext/disruptor.js';

const RECOMMENDATIONS = __ENV.RECOMMENDATIONS_URL || 'http://198.18.10.3:8080';

export const options = {
  scenarios: {
    disrupt: { executor: 'shared-iterations', iterations: 1, vus: 1, exec: 'disrupt' },
    load: { executor: 'constant-vus', vus: 5, duration: '30s', startTime: '5s', exec: 'load' },
  },
  thresholds: {
    http_req_failed: ['rate<0.05'],
  },
};

export function disrupt() {
  const catalog = new ServiceDisruptor(__ENV.CATALOG_SERVICE || 'catalog', __ENV.CATALOG_NAMESPACE || 'demo');
  catalog.injectHTTPFaults({ averageDelay: '900ms', delayVariation: '150ms' }, '40s');
}

export function load() {
  http.get(`${RECOMMENDATIONS}/recommendations`, { timeout: '60s' });
}
