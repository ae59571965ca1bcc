// reflect.js ADDR VERSION SERVICE MESSAGE — asks a server's reflection
// service (VERSION v1 or v1alpha) through grpc-js-reflection-client, a
// third-party client on @grpc/grpc-js (installed in tests/blackbox/reflection,
// found through NODE_PATH), and prints what it learnt as one JSON object:
// the services, SERVICE's methods with their types and streaming, and the
// fields of MESSAGE.
'use strict';
const grpc = require('@grpc/grpc-js');
const { GrpcReflection } = require('grpc-js-reflection-client');

async function main() {
    const [addr, version, service, message] = process.argv.slice(2);
    const c = new GrpcReflection(addr, grpc.ChannelCredentials.createInsecure(), {}, version);
    const out = { services: await c.listServices() };
    const svc = (await c.getDescriptorBySymbol(service)).getProtobufJsRoot().lookupService(service);
    svc.resolveAll();
    out.methods = svc.methodsArray.map((m) => ({
        name: m.name,
        requestType: m.resolvedRequestType.fullName,
        responseType: m.resolvedResponseType.fullName,
        requestStream: !!m.requestStream,
        responseStream: !!m.responseStream,
    }));
    const t = (await c.getDescriptorBySymbol(message)).getProtobufJsRoot().lookupType(message);
    t.resolveAll();
    out.fields = t.fieldsArray.map((f) => ({ name: f.name, id: f.id, type: f.type, repeated: f.repeated }));
    process.stdout.write(JSON.stringify(out) + '\n');
}

main().then(() => process.exit(0), (e) => {
    process.stderr.write('reflect.js: ' + (e && e.stack ? e.stack : String(e)) + '\n');
    process.exit(1);
});
