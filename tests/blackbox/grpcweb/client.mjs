// A gRPC-Web client written elsewhere, driven against a running bazaar by
// tests/blackbox/test_grpc_web.py.
//
//   node client.mjs '{"fds": "bazaar.pb", "url": "http://127.0.0.1:P",
//                     "client": "connect" | "grpcweb", "format": "binary" | "text",
//                     "origin": "http://localhost:3000", "userId": 1, "token": "...",
//                     "listAfter": 0, "listLimit": 0}'
//
// prints one JSON object with what each call gave (or its error code) and
// the requests the client made, as a browser would have seen them.
//
// Clients (both from npm, neither generated code):
//   connect: @connectrpc/connect-web's createGrpcWebTransport on Node's
//            fetch; binary only (its other format is +json).
//   grpcweb: the grpc-web package (GrpcWebClientBase, format 'binary' =
//            application/grpc-web+proto or 'text' = application/grpc-web-text)
//            on the xhr2 XMLHttpRequest.
// Messages are @bufbuild/protobuf v2 messages from a FileDescriptorSet that
// protoc made from proto/bazaar.proto (no codegen plugin).
//
// Either transport goes through a browser stand-in: it sends the Origin
// header, makes the CORS preflight a browser would make for the request's
// non-safelisted headers (and fails the call unless the answer allows the
// origin, POST and each of those headers), checks Access-Control-Allow-Origin
// on the answer, and hides the response headers a browser would hide (all but
// the CORS-safelisted ones and those in Access-Control-Expose-Headers).
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

import { create, createFileRegistry, fromBinary, toBinary, toJson } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";

const require = createRequire(import.meta.url);
const opts = JSON.parse(process.argv[2]);
const registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, readFileSync(opts.fds)));
const UserService = registry.getService("bazaar.v1.UserService");
if (!UserService) throw new Error("bazaar.v1.UserService is not in " + opts.fds);

// ---- the browser stand-in ----

const SAFE_REQUEST_HEADERS = new Set(["accept", "accept-language", "content-language"]);
const SAFE_CONTENT_TYPES = new Set(["application/x-www-form-urlencoded", "multipart/form-data", "text/plain"]);
const SAFE_RESPONSE_HEADERS = new Set(["cache-control", "content-language", "content-length", "content-type",
  "expires", "last-modified", "pragma"]);
const log = []; // one entry per request: what was sent and what came back

function listOf(v) {
  return (v || "").split(",").map((s) => s.trim().toLowerCase()).filter(Boolean);
}

// The request headers a browser would preflight (lowercase, sorted).
function unsafeHeaders(headers) {
  const out = [];
  for (const [k, v] of Object.entries(headers)) {
    const n = k.toLowerCase();
    if (SAFE_REQUEST_HEADERS.has(n)) continue;
    if (n === "content-type" && SAFE_CONTENT_TYPES.has(v.split(";")[0].trim().toLowerCase())) continue;
    if (n === "user-agent" || n === "origin" || n === "content-length" || n === "host") continue;
    out.push(n);
  }
  return out.sort();
}

// Preflights (once per header set, as a browser caches), then checks the
// answer's Access-Control-Allow-Origin.  Throws on what a browser would
// refuse; returns the response headers a page may read.
const preflighted = new Map();
async function preflight(url, headers) {
  const want = unsafeHeaders(headers);
  const key = url + " " + want.join(",");
  if (preflighted.has(key)) return;
  const res = await fetch(url, {
    method: "OPTIONS",
    headers: { Origin: opts.origin, "Access-Control-Request-Method": "POST",
      "Access-Control-Request-Headers": want.join(",") },
  });
  const entry = { method: "OPTIONS", url, status: res.status, requestHeaders: want,
    allowOrigin: res.headers.get("access-control-allow-origin"),
    allowMethods: listOf(res.headers.get("access-control-allow-methods")),
    allowHeaders: listOf(res.headers.get("access-control-allow-headers")) };
  log.push(entry);
  if (res.status < 200 || res.status > 299) throw new TypeError(`CORS preflight: status ${res.status}`);
  if (entry.allowOrigin !== opts.origin && entry.allowOrigin !== "*")
    throw new TypeError(`CORS preflight: Access-Control-Allow-Origin ${entry.allowOrigin}`);
  if (!entry.allowMethods.includes("post")) throw new TypeError("CORS preflight: POST not allowed");
  const missing = want.filter((h) => !entry.allowHeaders.includes(h) && !entry.allowHeaders.includes("*"));
  if (missing.length) throw new TypeError("CORS preflight: headers not allowed: " + missing.join(","));
  preflighted.set(key, true);
}

function visibleHeaders(res) {
  const expose = new Set(listOf(res.headers.get("access-control-expose-headers")));
  const out = new Headers();
  for (const [k, v] of res.headers) if (SAFE_RESPONSE_HEADERS.has(k) || expose.has(k)) out.append(k, v);
  return out;
}

function checkAllowOrigin(res, entry) {
  entry.allowOrigin = res.headers.get("access-control-allow-origin");
  entry.exposeHeaders = listOf(res.headers.get("access-control-expose-headers"));
  if (entry.allowOrigin !== opts.origin && entry.allowOrigin !== "*")
    throw new TypeError(`CORS: response Access-Control-Allow-Origin ${entry.allowOrigin}`);
}

// A fetch for Connect's transport.
async function browserFetch(input, init = {}) {
  const url = typeof input === "string" ? input : input.url;
  const headers = Object.fromEntries(new Headers(init.headers).entries());
  await preflight(url, headers);
  const res = await fetch(url, { ...init, headers: { ...headers, Origin: opts.origin } });
  const entry = { method: "POST", url, status: res.status, contentType: res.headers.get("content-type"),
    requestHeaders: headers };
  log.push(entry);
  checkAllowOrigin(res, entry);
  // A Response whose body streams as it arrives, with only readable headers.
  return new Response(res.body, { status: res.status, statusText: res.statusText, headers: visibleHeaders(res) });
}

// An XMLHttpRequest for grpc-web: xhr2, with the same checks.  xhr2 calls
// no preflight and refuses to set Origin; this one does both.
function browserXHR() {
  const XHR2 = require("xhr2");
  const restricted = { ...XHR2.prototype._restrictedHeaders };
  delete restricted.origin;
  return class BrowserXHR extends XHR2 {
    constructor() {
      super();
      this._restrictedHeaders = restricted;
      this._bzSent = {};
    }
    open(method, url, ...rest) {
      this._bzUrl = url;
      return super.open(method, url, ...rest);
    }
    setRequestHeader(name, value) {
      this._bzSent[name.toLowerCase()] = String(value);
      return super.setRequestHeader(name, value);
    }
    send(body) {
      super.setRequestHeader("Origin", opts.origin);
      preflight(this._bzUrl, this._bzSent).then(
        () => super.send(body),
        (e) => {
          log.push({ method: "POST", url: this._bzUrl, refused: String(e.message) });
          // as a browser: a network error, status 0
          this.readyState = 4;
          this.status = 0;
          this.dispatchEvent({ type: "readystatechange" });
          this.dispatchEvent({ type: "error" });
          this.dispatchEvent({ type: "loadend" });
        });
    }
    _onHttpResponse(request, response) {
      const entry = { method: "POST", url: this._bzUrl, status: response.statusCode,
        contentType: response.headers["content-type"] || null, requestHeaders: this._bzSent };
      log.push(entry);
      const expose = new Set(listOf(response.headers["access-control-expose-headers"]));
      entry.allowOrigin = response.headers["access-control-allow-origin"] || null;
      entry.exposeHeaders = [...expose];
      if (entry.allowOrigin !== opts.origin && entry.allowOrigin !== "*") {
        entry.refused = "CORS: response Access-Control-Allow-Origin " + entry.allowOrigin;
        return this._onHttpRequestError(request, new Error(entry.refused));
      }
      for (const k of Object.keys(response.headers))
        if (!SAFE_RESPONSE_HEADERS.has(k) && !expose.has(k)) delete response.headers[k];
      return super._onHttpResponse(request, response);
    }
  };
}

// ---- the two clients, one interface ----

const schemaOf = (m) => ({ input: m.input, output: m.output });

function connectClient() {
  const transport = createGrpcWebTransport({ baseUrl: opts.url, useBinaryFormat: opts.format !== "json",
    fetch: browserFetch });
  const c = createClient(UserService, transport);
  return {
    unary: (name, req, headers) => c[name](req, { headers, timeoutMs: 10000 }),
    async stream(name, req, headers, max) {
      const out = [];
      for await (const m of c[name](req, { headers, timeoutMs: 10000 })) {
        out.push(m);
        if (max && out.length >= max) break; // cancels the rest
      }
      return out;
    },
  };
}

function grpcWebClient() {
  globalThis.XMLHttpRequest = browserXHR();
  const grpcWeb = require("grpc-web");
  const client = new grpcWeb.GrpcWebClientBase({ format: opts.format });
  const descs = {};
  for (const m of UserService.methods) {
    const { input, output } = schemaOf(m);
    class Req {}
    class Resp {}
    descs[m.localName] = new grpcWeb.MethodDescriptor(`/${UserService.typeName}/${m.name}`,
      m.methodKind === "server_streaming" ? grpcWeb.MethodType.SERVER_STREAMING : grpcWeb.MethodType.UNARY,
      Req, Resp, (msg) => toBinary(input, msg), (bytes) => fromBinary(output, bytes));
  }
  const path = (name) => opts.url + descs[name].getName();
  const err = (e) => Object.assign(new Error(e.message), { code: e.code, grpcWeb: true });
  return {
    unary: (name, req, headers) => new Promise((resolve, reject) => {
      client.rpcCall(path(name), req, { ...headers, deadline: String(Date.now() + 10000) }, descs[name],
        (e, resp) => (e ? reject(err(e)) : resolve(resp)));
    }),
    stream: (name, req, headers, max) => new Promise((resolve, reject) => {
      const out = [];
      const s = client.serverStreaming(path(name), req, headers, descs[name]);
      let done = false;
      s.on("data", (m) => {
        out.push(m);
        if (max && out.length >= max && !done) {
          done = true;
          s.cancel();
          resolve(out.slice());
        }
      });
      s.on("error", (e) => { if (!done) { done = true; reject(err(e)); } });
      s.on("end", () => { if (!done) { done = true; resolve(out); } });
    }),
  };
}

// ---- the calls ----

const GetUser = UserService.method.getUser, ListUsers = UserService.method.listUsers,
  CreateUser = UserService.method.createUser;
const user = (m) => (m ? toJson(GetUser.output, m, { alwaysEmitImplicit: false }) : m);

async function attempt(f) {
  try {
    return { ok: await f() };
  } catch (e) {
    const code = e instanceof ConnectError ? e.code : e.code;
    return { error: { code: typeof code === "number" ? code : null, message: String(e.rawMessage ?? e.message) } };
  }
}

const c = opts.client === "grpcweb" ? grpcWebClient() : connectClient();
const auth = opts.token ? { authorization: "Bearer " + opts.token } : {};
const out = { client: opts.client, format: opts.format };
out.getUser = await attempt(async () => user(await c.unary("getUser", create(GetUser.input, { id: BigInt(opts.userId) }), {})));
out.getUserAuth = await attempt(async () =>
  user(await c.unary("getUser", create(GetUser.input, { id: BigInt(opts.userId) }), auth)));
out.missing = await attempt(async () => user(await c.unary("getUser", create(GetUser.input, { id: 987654321n }), {})));
if (opts.createEmail)
  out.create = await attempt(async () => user(await c.unary("createUser",
    create(CreateUser.input, { email: opts.createEmail, name: "Made by " + opts.client, password: "correct horse" }), {})));
out.createBad = await attempt(async () => user(await c.unary("createUser",
  create(CreateUser.input, { email: "not an email", name: "", password: "x" }), {})));
out.list = await attempt(async () => (await c.stream("listUsers",
  create(ListUsers.input, { afterId: BigInt(opts.listAfter || 0), limit: opts.listLimit || 0 }), {})).map(user));
out.listFirst2 = await attempt(async () => (await c.stream("listUsers", create(ListUsers.input, {}), {}, 2)).map(user));
out.after = await attempt(async () => user(await c.unary("getUser", create(GetUser.input, { id: BigInt(opts.userId) }), {})));
out.requests = log;
process.stdout.write(JSON.stringify(out) + "\n");
