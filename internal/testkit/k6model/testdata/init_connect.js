import grpc from 'k6/net/grpc';
const client = new grpc.Client();
client.connect(__ENV.ADDR, { plaintext: true });
export default function () {}
