// describe.js ADDR VERSION — asks a bazaar server's reflection service
// (VERSION v1 or v1alpha) through grpc-js-reflection-client, a third-party
// client on @grpc/grpc-js, and prints what it learnt as one JSON object:
// the services, bazaar.v1.UserService's methods with their types, the
// fields of bazaar.v1.User, and the error an unknown symbol gets.
'use strict';
const grpc = require('@grpc/grpc-js');
const { GrpcReflection } = require('grpc-js-reflection-client');

async function main() {
    const [addr, version] = process.argv.slice(2);
    const c = new GrpcReflection(addr, grpc.ChannelCredentials.createInsecure(), {}, version);
    const out = { version };
    out.services = await c.listServices();

    // listMethods: the package object grpc-js builds from the descriptors
    out.listMethods = (await c.listMethods('bazaar.v1.UserService')).map((m) => ({
        name: m.name,
        path: m.definition.path,
        requestStream: m.definition.requestStream,
        responseStream: m.definition.responseStream,
        requestType: m.definition.requestType.type.name,
        responseType: m.definition.responseType.type.name,
    }));

    // the protobufjs view: fully qualified types
    const svc = (await c.getDescriptorBySymbol('bazaar.v1.UserService')).getProtobufJsRoot()
        .lookupService('bazaar.v1.UserService');
    svc.resolveAll();
    out.userService = svc.methodsArray.map((m) => ({
        name: m.name,
        requestType: m.resolvedRequestType.fullName,
        responseType: m.resolvedResponseType.fullName,
        requestStream: !!m.requestStream,
        responseStream: !!m.responseStream,
    }));

    const user = (await c.getDescriptorBySymbol('bazaar.v1.User')).getProtobufJsRoot().lookupType('bazaar.v1.User');
    user.resolveAll();
    out.user = user.fieldsArray.map((f) => ({
        name: f.name, id: f.id, type: f.resolvedType ? f.resolvedType.fullName : f.type, repeated: f.repeated,
    }));

    // a method's symbol resolves to its service's file too
    const byMethod = (await c.getDescriptorBySymbol('bazaar.v1.UserService.GetUser')).getProtobufJsRoot();
    out.methodSymbolHasService = !!byMethod.lookup('bazaar.v1.UserService');

    try {
        await c.getDescriptorBySymbol('bazaar.v1.NoSuchThing');
        out.unknownSymbolError = null;
    } catch (e) {
        out.unknownSymbolError = String(e.message || e);
    }
    process.stdout.write(JSON.stringify(out) + '\n');
}

main().then(() => process.exit(0), (e) => {
    process.stderr.write('describe.js: ' + (e && e.stack ? e.stack : String(e)) + '\n');
    process.exit(1);
});
