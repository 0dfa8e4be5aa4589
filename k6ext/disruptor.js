// faultline's k6 library: xk6-disruptor's JavaScript API for stock k6.
//
//   import { PodDisruptor, ServiceDisruptor } from './disruptor.js';
//   // was: import { PodDisruptor, ServiceDisruptor } from 'k6/x/disruptor';
//
// It talks to a faultline gateway with k6's own gRPC client (k6/net/grpc):
// FAULTLINE_ADDR (default 127.0.0.1:7440; `faultline run` sets it),
// FAULTLINE_TLS=1 for TLS. Every call carries the gateway's bearer token,
// found as the faultline CLI finds it: FAULTLINE_TOKEN (`faultline run`
// sets it), else the file FAULTLINE_TOKEN_FILE names, else the gateway's
// default token file, $XDG_CONFIG_HOME/faultline/gateway-token or
// ~/.config/faultline/gateway-token (read with open(), in the init
// context). Method
// schemas come from the gateway's server reflection, so the file needs
// nothing beside it and can be imported from a URL; set FAULTLINE_PROTO to
// a directory holding faultline/v1/gateway.proto to load the schema from
// files instead (k6 loads protos only in the init context, so this happens
// at import time).
//
// Differences from xk6-disruptor, all supersets: durations may also be
// numbers (milliseconds); injectNetworkFaults exists on ServiceDisruptor
// too; terminatePods returns the names it terminated; faults take
// faultline's extra fields (delayRate, errorHeaders, match, ...);
// injectTCPFaults applies Toxiproxy-style toxics to any TCP port; status()
// returns the live counters of the faults on a disruptor's targets; every
// fault's counters are added to k6 metrics (faultline_requests,
// faultline_requests_faulted, ..., tagged with kind). The options proxyPort
// and injectTimeout are accepted and mean nothing: faultline needs no proxy
// port and no agent to wait for.

import grpc from 'k6/net/grpc';
import { Counter } from 'k6/metrics';

const ADDR = __ENV.FAULTLINE_ADDR || '127.0.0.1:7440';
const TLS = /^(1|true|yes)$/i.test(__ENV.FAULTLINE_TLS || '');
const TOKEN = gatewayToken();
const PROTO = __ENV.FAULTLINE_PROTO || '';
const SERVICE = 'faultline.v1.Gateway';
// An inject call lasts its duration; the gRPC deadline leaves this margin.
const CALL_MARGIN_MS = 60000;

const client = new grpc.Client();
if (PROTO) {
  client.load([PROTO], 'faultline/v1/gateway.proto');
}

const metrics = {
  requests: new Counter('faultline_requests'),
  faulted: new Counter('faultline_requests_faulted'),
  delayed: new Counter('faultline_requests_delayed'),
  errored: new Counter('faultline_requests_errored'),
  packetsSeen: new Counter('faultline_packets_seen'),
  packetsDropped: new Counter('faultline_packets_dropped'),
  connectionsRefused: new Counter('faultline_connections_refused'),
  tcpConnections: new Counter('faultline_tcp_connections'),
  tcpConnectionsToxic: new Counter('faultline_tcp_connections_toxic'),
  tcpConnectionsCut: new Counter('faultline_tcp_connections_cut'),
  bytesDelayed: new Counter('faultline_tcp_bytes_delayed'),
  bytesDropped: new Counter('faultline_tcp_bytes_dropped'),
  tlsHandshakesFaulted: new Counter('faultline_tls_handshakes_faulted'),
};

let connected = false;

// gatewayToken finds the gateway's bearer token (see the top of the file).
function gatewayToken() {
  if (__ENV.FAULTLINE_TOKEN) return __ENV.FAULTLINE_TOKEN;
  if (__ENV.FAULTLINE_TOKEN_FILE) {
    try {
      return open(__ENV.FAULTLINE_TOKEN_FILE).trim();
    } catch (e) {
      throw new Error(`cannot read FAULTLINE_TOKEN_FILE: ${message(e)}`);
    }
  }
  const config = __ENV.XDG_CONFIG_HOME || (__ENV.HOME ? `${__ENV.HOME}/.config` : '');
  if (!config) return '';
  try {
    return open(`${config}/faultline/gateway-token`).trim();
  } catch (e) {
    return ''; // none: the gateway's Unauthenticated error says where it is
  }
}

// call invokes a Gateway method and returns its response message, or
// throws an Error carrying the gateway's message.
function call(method, request, timeoutMs) {
  if (!connected) {
    const params = { plaintext: !TLS, reflect: !PROTO, timeout: '10s' };
    if (TOKEN) {
      params.reflectMetadata = { authorization: `Bearer ${TOKEN}` };
    }
    try {
      client.connect(ADDR, params);
    } catch (e) {
      throw new Error(`cannot reach the faultline gateway at ${ADDR} (set FAULTLINE_ADDR, or run k6 with faultline run): ${message(e)}`);
    }
    connected = true;
  }
  const params = { timeout: `${Math.ceil(timeoutMs)}ms` };
  if (TOKEN) {
    params.metadata = { authorization: `Bearer ${TOKEN}` };
  }
  const res = client.invoke(`${SERVICE}/${method}`, request, params);
  if (res.status !== grpc.StatusOK) {
    const msg = res.error && res.error.message ? res.error.message : `gRPC status ${res.status}`;
    throw new Error(msg);
  }
  return res.message || {};
}

function message(e) {
  return e && e.message ? e.message : String(e);
}

// --- value conversion, with xk6-disruptor's rules: keys in lowerCamel or
// snake_case, unknown keys throw.

function camel(key) {
  return key.replace(/_([a-z0-9])/g, (_, c) => c.toUpperCase());
}

function typeName(v) {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isInteger(v) ? 'int64' : 'float64';
  return typeof v;
}

// convert checks obj against fields ({name: converter}) and returns the
// converted fields; struct names the type in error messages.
function convert(obj, fields, struct) {
  if (obj === null || obj === undefined) {
    return {};
  }
  if (typeof obj !== 'object' || Array.isArray(obj)) {
    throw new Error(`expected value map[string]interface{} got ${typeName(obj)}`);
  }
  const out = {};
  for (const key of Object.keys(obj)) {
    const name = camel(key);
    if (!Object.prototype.hasOwnProperty.call(fields, name)) {
      throw new Error(`unknown field ${key} in struct ${struct}`);
    }
    if (obj[key] === undefined || obj[key] === null) continue;
    out[name] = fields[name](obj[key], name);
  }
  return out;
}

const UNITS = { ns: 1, us: 1e3, 'µs': 1e3, 'μs': 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9 };

// parseGoDuration parses a Go duration string ("1h2m3.5s", "900ms") into
// nanoseconds, with Go's error messages.
function parseGoDuration(s) {
  const orig = s;
  let sign = 1;
  if (s[0] === '-' || s[0] === '+') {
    if (s[0] === '-') sign = -1;
    s = s.slice(1);
  }
  if (s === '0') return 0;
  if (s === '') throw new Error(`time: invalid duration "${orig}"`);
  let total = 0;
  while (s !== '') {
    const num = /^(\d+\.?\d*|\.\d+)/.exec(s);
    if (!num) throw new Error(`time: invalid duration "${orig}"`);
    s = s.slice(num[0].length);
    const unit = /^(ns|us|µs|μs|ms|s|m|h)/.exec(s);
    if (!unit) {
      if (s === '') throw new Error(`time: missing unit in duration "${orig}"`);
      throw new Error(`time: unknown unit "${s.replace(/[\d.].*$/, '')}" in duration "${orig}"`);
    }
    s = s.slice(unit[0].length);
    total += parseFloat(num[0]) * UNITS[unit[0]];
  }
  return sign * total;
}

// duration: a Go duration string, or a number of milliseconds (a superset
// of xk6-disruptor). Returns nanoseconds.
function duration(v) {
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw new Error(`invalid duration ${v}`);
    return v * 1e6;
  }
  if (typeof v !== 'string') {
    throw new Error(`expected string got ${typeName(v)}`);
  }
  return parseGoDuration(v);
}

// protoDuration renders nanoseconds as a protobuf JSON Duration ("0.900s").
function protoDuration(ns) {
  const neg = ns < 0;
  ns = Math.round(Math.abs(ns));
  const secs = Math.floor(ns / 1e9);
  const frac = String(ns % 1e9).padStart(9, '0');
  return `${neg ? '-' : ''}${secs}.${frac}s`;
}

function number(v, name) {
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`${name}: expected number got ${typeName(v)}`);
  return v;
}

function integer(v, name) {
  if (typeof v !== 'number' || !Number.isInteger(v)) throw new Error(`${name}: expected int64 got ${typeName(v)}`);
  return v;
}

function string(v, name) {
  if (typeof v !== 'string') throw new Error(`${name}: expected string got ${typeName(v)}`);
  return v;
}

function bool(v, name) {
  if (typeof v !== 'boolean') throw new Error(`${name}: expected bool got ${typeName(v)}`);
  return v;
}

function stringMap(v, name) {
  if (typeof v !== 'object' || Array.isArray(v)) throw new Error(`${name}: expected map[string]string got ${typeName(v)}`);
  const out = {};
  for (const k of Object.keys(v)) out[k] = String(v[k]);
  return out;
}

function stringList(v, name) {
  if (typeof v === 'string') return [v];
  if (!Array.isArray(v)) throw new Error(`${name}: expected array of strings got ${typeName(v)}`);
  return v.map((x) => string(x, name));
}

// port: a number, or a port name (Kubernetes named ports).
function port(v, name) {
  if (typeof v === 'string') return v;
  const p = integer(v, name);
  if (p < 0 || p > 65535) throw new Error(`${name}: port must be in 0-65535, got ${p}`);
  return p;
}

function headerMatches(v, name) {
  if (Array.isArray(v)) {
    return v.map((h) => convert(h, { name: string, value: string }, 'HeaderMatch'));
  }
  return Object.keys(stringMap(v, name)).map((k) => ({ name: k, value: String(v[k]) }));
}

// --- selectors and faults

function selectorSet(selector) {
  const sel = convert(selector, {
    namespace: string,
    select: (v) => convert(v, { labels: stringMap }, 'PodAttributes'),
    exclude: (v) => convert(v, { labels: stringMap }, 'PodAttributes'),
  }, 'PodSelectorSpec');
  const select = (sel.select && sel.select.labels) || {};
  const exclude = (sel.exclude && sel.exclude.labels) || {};
  if (!sel.namespace && Object.keys(select).length === 0 && Object.keys(exclude).length === 0) {
    throw new Error('namespace, select and exclude attributes in pod selector cannot all be empty');
  }
  return { pods: { namespace: sel.namespace || 'default', select: { labels: select }, exclude: { labels: exclude } } };
}

const delayFields = { averageDelay: duration, delayVariation: duration, delayRate: number };

function checkDelays(f) {
  if (f.averageDelay < 0) throw new Error('averageDelay must not be negative');
  if (f.delayVariation > (f.averageDelay || 0)) {
    throw new Error('variation must be less that average delay: delayVariation must not be greater than averageDelay');
  }
  if (f.errorRate !== undefined && (f.errorRate < 0 || f.errorRate > 1)) {
    throw new Error('error rate must be in the range [0.0, 1.0]');
  }
  if (f.delayRate !== undefined && (f.delayRate < 0 || f.delayRate > 1)) {
    throw new Error('delayRate must be in the range [0.0, 1.0]');
  }
}

function withPort(proto, f) {
  if (typeof f.port === 'string') {
    return { portName: f.port };
  }
  if (f.port) proto.port = f.port;
  return {};
}

function delays(proto, f) {
  if (f.averageDelay !== undefined) proto.averageDelay = protoDuration(f.averageDelay);
  if (f.delayVariation !== undefined) proto.delayVariation = protoDuration(f.delayVariation);
  if (f.delayRate !== undefined) proto.delayRate = f.delayRate;
}

// failFirst: {attempts, keyHeader}, a retry-testing sequence (superset).
function failFirst(v) {
  return convert(v, { attempts: integer, keyHeader: string }, 'FailFirst');
}

// rewrite: {status, setHeaders, removeHeaders, body}, a response rewrite
// (superset).
function rewrite(v) {
  return convert(v, { status: integer, setHeaders: stringMap, removeHeaders: stringList, body: string }, 'ResponseRewrite');
}

// phases converts a timeline (superset): [{duration, ...the effect fields
// of the fault}], each phase's effect for its duration, in order.
function phases(effects, struct) {
  return (v, name) => {
    if (!Array.isArray(v)) throw new Error(`${name} must be an array of phases, got ${typeName(v)}`);
    return v.map((p, i) => {
      const f = convert(p, { duration, ...delayFields, ...effects }, `${struct}[${i}]`);
      if (f.duration === undefined) throw new Error(`${name}[${i}]: duration is required`);
      const out = {};
      for (const [k, x] of Object.entries(f)) {
        out[k] = k === 'duration' || k === 'averageDelay' || k === 'delayVariation' ? protoDuration(x) : x;
      }
      return out;
    });
  };
}

function httpFault(fault) {
  const f = convert(fault, {
    port, ...delayFields, errorRate: number, errorCode: integer, errorBody: string, exclude: string,
    errorHeaders: stringMap, delayMode: string, keepConnections: bool, failFirst, rewrite,
    phases: phases({ errorRate: number, errorCode: integer, errorBody: string, errorHeaders: stringMap }, 'HTTPPhase'),
    match: (v) => convert(v, { paths: stringList, methods: stringList, headers: headerMatches }, 'HTTPMatch'),
  }, 'HTTPFault');
  checkDelays(f);
  if ((f.errorRate || 0) > 0 && !f.errorCode) throw new Error('error code must be a valid http error code');
  if (f.delayMode !== undefined && !['request', 'response'].includes(f.delayMode)) {
    throw new Error(`delayMode must be request or response, got "${f.delayMode}"`);
  }
  const proto = {};
  const extra = withPort(proto, f);
  delays(proto, f);
  if (f.errorRate !== undefined) proto.errorRate = f.errorRate;
  if (f.errorCode !== undefined) proto.errorCode = f.errorCode;
  if (f.errorBody !== undefined) proto.errorBody = f.errorBody;
  if (f.errorHeaders !== undefined) proto.errorHeaders = f.errorHeaders;
  if (f.exclude !== undefined) proto.exclude = f.exclude;
  if (f.match !== undefined) proto.match = f.match;
  if (f.delayMode !== undefined) proto.delayMode = f.delayMode === 'response' ? 'DELAY_MODE_RESPONSE' : 'DELAY_MODE_REQUEST';
  if (f.keepConnections !== undefined) proto.keepConnections = f.keepConnections;
  if (f.failFirst !== undefined) proto.failFirst = f.failFirst;
  if (f.rewrite !== undefined) proto.rewrite = f.rewrite;
  if (f.phases !== undefined) proto.phases = f.phases;
  return { fault: proto, extra };
}

function grpcFault(fault) {
  const f = convert(fault, {
    port, ...delayFields, errorRate: number, statusCode: integer, statusMessage: string, exclude: string,
    methods: stringList, metadata: headerMatches, resetConnections: bool, failFirst,
    phases: phases({ errorRate: number, statusCode: integer, statusMessage: string }, 'GrpcPhase'),
  }, 'GrpcFault');
  checkDelays(f);
  if ((f.errorRate || 0) > 0 && !f.statusCode) throw new Error('status code cannot be 0 (OK)');
  const proto = {};
  const extra = withPort(proto, f);
  delays(proto, f);
  if (f.errorRate !== undefined) proto.errorRate = f.errorRate;
  if (f.statusCode !== undefined) proto.statusCode = f.statusCode;
  if (f.statusMessage !== undefined) proto.statusMessage = f.statusMessage;
  if (f.exclude !== undefined) proto.exclude = f.exclude;
  if (f.methods !== undefined) proto.methods = f.methods;
  if (f.metadata !== undefined) proto.metadata = f.metadata;
  if (f.resetConnections !== undefined) proto.resetConnections = f.resetConnections;
  if (f.failFirst !== undefined) proto.failFirst = f.failFirst;
  if (f.phases !== undefined) proto.phases = f.phases;
  return { fault: proto, extra };
}

function networkFault(fault) {
  const f = convert(fault, { port: integer, protocol: string, dropRate: number, resetRate: number }, 'NetworkFault');
  if (f.dropRate !== undefined && (f.dropRate < 0 || f.dropRate > 1)) throw new Error('dropRate must be in the range [0.0, 1.0]');
  if (f.resetRate !== undefined && (f.resetRate < 0 || f.resetRate > 1)) throw new Error('resetRate must be in the range [0.0, 1.0]');
  const proto = {};
  if (f.port !== undefined) proto.port = f.port;
  if (f.protocol !== undefined) proto.protocol = f.protocol;
  if (f.dropRate !== undefined) proto.dropRate = f.dropRate;
  if (f.resetRate !== undefined) proto.resetRate = f.resetRate;
  return { fault: proto, extra: {} };
}

// Toxiproxy's toxics: each type's attributes, as the node API names them.
const TOXICS = {
  latency: { latency: duration, jitter: duration },
  bandwidth: { rate: integer },
  timeout: { timeout: duration },
  reset_peer: { timeout: duration },
  slow_close: { delay: duration },
  limit_data: { bytes: integer },
  slicer: { averageSize: integer, sizeVariation: integer, delay: duration },
};
const DURATION_ATTRS = new Set(['latency', 'jitter', 'timeout', 'delay']);

// tlsFault converts {serverNames, rate, handshakeDelay | reset | alert |
// certificate: {defect, caCertPem, caKeyPem}}: TLS-level faults (superset).
function tlsFault(v) {
  const t = convert(v, {
    serverNames: stringList, rate: number, handshakeDelay: duration, reset: bool, alert: string,
    certificate: (c) => convert(c, { defect: string, caCertPem: string, caKeyPem: string }, 'TLSCertificate'),
  }, 'TLSFault');
  const actions = ['handshakeDelay', 'reset', 'alert', 'certificate'].filter((k) => t[k] !== undefined && t[k] !== false);
  if (actions.length > 1) throw new Error(`tls: give one of handshakeDelay, reset, alert, certificate, got ${actions.join(' and ')}`);
  const proto = {};
  if (t.serverNames !== undefined) proto.serverNames = t.serverNames;
  if (t.rate !== undefined) proto.rate = t.rate;
  if (t.handshakeDelay !== undefined) proto.handshakeDelay = protoDuration(t.handshakeDelay);
  if (t.reset) proto.reset = {};
  if (t.alert !== undefined) proto.alert = t.alert;
  if (t.certificate !== undefined) proto.certificate = t.certificate;
  return proto;
}

// tcpFault converts {port, toxics: [{type, stream, toxicity, attributes}],
// tls}, Toxiproxy's shape; the node checks the values.
function tcpFault(fault) {
  const f = convert(fault, { port: (v, n) => v, toxics: (v) => v, tls: tlsFault }, 'TCPFault');
  const tlsAction = f.tls && ['handshakeDelay', 'reset', 'alert', 'certificate'].some((k) => f.tls[k] !== undefined);
  if (f.toxics === undefined && tlsAction) f.toxics = [];
  if (!Array.isArray(f.toxics) || (f.toxics.length === 0 && !tlsAction)) throw new Error('toxics must be a non-empty array (or give a tls action)');
  const proto = { upstream: [], downstream: [] };
  if (f.tls !== undefined) proto.tls = f.tls;
  f.toxics.forEach((t, i) => {
    const x = convert(t, { type: string, stream: string, toxicity: number, attributes: (v) => v }, 'Toxic');
    const attrs = TOXICS[x.type];
    if (!attrs) throw new Error(`toxics[${i}]: unknown type ${x.type}: one of ${Object.keys(TOXICS).join(', ')}`);
    const stream = x.stream === undefined ? 'downstream' : x.stream;
    if (stream !== 'upstream' && stream !== 'downstream') throw new Error(`toxics[${i}]: stream must be upstream or downstream, got ${stream}`);
    const a = convert(x.attributes, attrs, `${x.type} attributes`);
    const kind = {};
    for (const [k, v] of Object.entries(a)) kind[k] = DURATION_ATTRS.has(k) ? protoDuration(v) : v;
    const toxic = { [camel(x.type)]: kind };
    if (x.toxicity !== undefined) toxic.toxicity = x.toxicity;
    proto[stream].push(toxic);
  });
  const extra = withPort(proto, f);
  return { fault: proto, extra };
}

function injectDuration(d) {
  let ns;
  try {
    ns = duration(d);
  } catch (e) {
    throw new Error(`invalid duration argument: ${message(e)}`);
  }
  if (ns < 1e9) throw new Error(`invalid duration argument: duration must be at least one second, got ${d}`);
  return ns;
}

function num(v) {
  return Number(v || 0);
}

function record(kind, total) {
  const tags = { kind };
  const requests = num(total.requests);
  if (kind === 'tcp') {
    metrics.tcpConnections.add(num(total.tcpConnections), tags);
    metrics.tcpConnectionsToxic.add(num(total.tcpConnectionsToxic), tags);
    metrics.tcpConnectionsCut.add(num(total.tcpConnectionsCut), tags);
    metrics.bytesDelayed.add(num(total.bytesDelayed), tags);
    metrics.bytesDropped.add(num(total.bytesDropped), tags);
    metrics.tlsHandshakesFaulted.add(num(total.tlsHandshakesFaulted), tags);
    return;
  }
  if (kind === 'network') {
    metrics.packetsSeen.add(num(total.packetsSeen), tags);
    metrics.packetsDropped.add(num(total.packetsDropped), tags);
    metrics.connectionsRefused.add(num(total.connectionsRefused), tags);
    return;
  }
  metrics.requests.add(requests, tags);
  metrics.faulted.add(requests - num(total.unmatched), tags);
  metrics.delayed.add(num(total.delayed), tags);
  metrics.errored.add(num(total.errored), tags);
}

const COUNTERS = ['requests', 'unmatched', 'delayed', 'errored', 'upstreamErrors', 'connectionsReset',
  'packetsSeen', 'packetsDropped', 'connectionsRefused', 'tcpConnections', 'tcpConnectionsToxic',
  'tcpConnectionsCut', 'bytesUpstream', 'bytesDownstream', 'bytesDelayed', 'bytesDropped', 'tlsHandshakes',
  'tlsHandshakesFaulted'];

// counters turns a Counters message (uint64 fields come as strings) into
// numbers.
function counters(c) {
  const out = {};
  for (const k of COUNTERS) out[k] = num(c[k]);
  return out;
}

// remainingMs is the time until an RFC 3339 timestamp, at least 0.
function remainingMs(ts) {
  if (!ts) return 0;
  // Date.parse takes at most milliseconds: cut the nanoseconds.
  const at = Date.parse(String(ts).replace(/(\.\d{3})\d+/, '$1'));
  return Number.isNaN(at) ? 0 : Math.max(0, at - Date.now());
}

// Disruptor holds what PodDisruptor and ServiceDisruptor share.
class Disruptor {
  constructor(targets) {
    this._targets = targets;
  }

  targets() {
    let resp;
    try {
      resp = call('Targets', { targets: this._targets }, 30000);
    } catch (e) {
      throw new Error(`error getting targets: ${message(e)}`);
    }
    return (resp.targets || []).map((t) => t.name);
  }

  _inject(kind, method, build, args, what) {
    const [fault, dur, options] = args;
    if (args.length < 2 || fault === undefined || fault === null || dur === undefined || dur === null) {
      throw new Error(`${what} and duration are required`);
    }
    let f;
    try {
      f = build(fault);
    } catch (e) {
      throw new Error(`invalid fault argument: ${message(e)}`);
    }
    const ns = injectDuration(dur);
    if (kind !== 'network') {
      try {
        convert(options, { proxyPort: integer }, 'ProtocolFaultOptions');
      } catch (e) {
        throw new Error(`invalid options argument: ${message(e)}`);
      }
    }
    const request = { targets: this._targets, duration: protoDuration(ns), fault: f.fault, ...f.extra };
    let resp;
    try {
      resp = call(method, request, ns / 1e6 + CALL_MARGIN_MS);
    } catch (e) {
      throw new Error(`error injecting fault: ${message(e)}`);
    }
    record(kind, resp.total || {});
    if (resp.noRequests) {
      throw new Error('error injecting fault: disruptor did not receive any request');
    }
    return undefined;
  }

  injectHTTPFaults(...args) {
    return this._inject('http', 'InjectHTTP', httpFault, args, 'HTTPFault');
  }

  injectGrpcFaults(...args) {
    return this._inject('grpc', 'InjectGrpc', grpcFault, args, 'GrpcFault');
  }

  // injectTCPFaults applies Toxiproxy-style toxics to the bytes of any
  // TCP port (a faultline superset): {port, toxics: [{type, stream,
  // toxicity, attributes}]}.
  injectTCPFaults(...args) {
    return this._inject('tcp', 'InjectTcp', tcpFault, args, 'TCPFault');
  }

  injectNetworkFaults(...args) {
    return this._inject('network', 'InjectNetwork', networkFault, args, 'NetworkFault');
  }

  // status returns the faults running now on this disruptor's targets
  // with their live counters (a faultline superset), e.g. for a check
  // from another scenario that the fault is hitting:
  //   {faults: [{target, namespace, node, id, kind, port, state,
  //              remainingMs, counters}], total, unreachable}
  // counters and total: {requests, unmatched, delayed, errored,
  // upstreamErrors, connectionsReset, packetsSeen, packetsDropped,
  // connectionsRefused}, as numbers; unreachable names the nodes that
  // could not be asked.
  status() {
    let resp;
    try {
      resp = call('Status', { targets: this._targets }, 30000);
    } catch (e) {
      throw new Error(`error getting fault status: ${message(e)}`);
    }
    return {
      faults: (resp.faults || []).map((r) => {
        const t = r.target || {};
        const f = r.fault || {};
        return {
          target: t.name || '',
          namespace: t.namespace || '',
          node: t.node || '',
          id: f.id || '',
          kind: f.kind || '',
          port: num(f.port),
          state: String(f.state || '').replace(/^FAULT_STATE_/, '').toLowerCase(),
          remainingMs: remainingMs(f.expires),
          counters: counters(f.counters || {}),
        };
      }),
      total: counters(resp.total || {}),
      unreachable: resp.unreachable || [],
    };
  }

  terminatePods(fault) {
    if (fault === undefined || fault === null) {
      throw new Error('PodTermination fault is required');
    }
    let f;
    try {
      f = convert(fault, { count: (v) => v, timeout: duration }, 'PodTerminationFault');
    } catch (e) {
      throw new Error(`invalid fault argument: ${message(e)}`);
    }
    let count = f.count;
    if (typeof count === 'number') {
      if (!Number.isInteger(count)) throw new Error(`invalid fault argument: count must be an integer or a percentage, got ${count}`);
      count = String(count);
    } else if (typeof count !== 'string' || !/^\d+(\.\d+)?%$/.test(count)) {
      throw new Error(`count is not a valid percentage: ${count === undefined ? '' : count}`);
    }
    const request = { targets: this._targets, count };
    let timeoutMs = 10000;
    if (f.timeout !== undefined) {
      request.timeout = protoDuration(f.timeout);
      timeoutMs = f.timeout / 1e6;
    }
    let resp;
    try {
      resp = call('TerminatePods', request, timeoutMs + CALL_MARGIN_MS);
    } catch (e) {
      throw new Error(`error terminating pods: ${message(e)}`);
    }
    return resp.terminated || [];
  }
}

function disruptorOptions(options, ctor) {
  try {
    convert(options, { injectTimeout: duration }, `${ctor}Options`);
  } catch (e) {
    throw new Error(`error creating ${ctor}: invalid ${ctor}Options: ${message(e)}`);
  }
}

// PodDisruptor targets the pods a selector matches:
// {namespace, select: {labels}, exclude: {labels}}.
export class PodDisruptor extends Disruptor {
  constructor(selector, options) {
    if (selector === undefined || selector === null) {
      throw new Error('error creating PodDisruptor: PodDisruptor constructor expects a non null PodSelector argument');
    }
    let targets;
    try {
      targets = selectorSet(selector);
    } catch (e) {
      throw new Error(`error creating PodDisruptor: invalid PodSelector: ${message(e)}`);
    }
    disruptorOptions(options, 'PodDisruptor');
    super(targets);
  }
}

// ServiceDisruptor targets the pods behind a service.
export class ServiceDisruptor extends Disruptor {
  constructor(service, namespace, options) {
    if (arguments.length < 2) {
      throw new Error('error creating ServiceDisruptor: ServiceDisruptor constructor requires service and namespace parameters');
    }
    if (typeof service !== 'string') {
      throw new Error(`error creating ServiceDisruptor: invalid service name argument: expected string got ${typeName(service)}`);
    }
    if (typeof namespace !== 'string') {
      throw new Error(`error creating ServiceDisruptor: invalid namespace argument: expected string got ${typeName(namespace)}`);
    }
    if (service === '') throw new Error('error creating ServiceDisruptor: must specify a service name');
    if (namespace === '') throw new Error('error creating ServiceDisruptor: must specify a namespace');
    disruptorOptions(options, 'ServiceDisruptor');
    super({ service: { name: service, namespace } });
  }
}
