// Test-only OAuth 2.1 authorization server (oidc-provider v9) for the
// mcp-token-broker integration tests. NOT for production use.
//
// Usage:
//   node server.mjs [--port N] [--resource URL]... [--access-ttl S] [--refresh-ttl S]
//                   [--keys-file PATH]
//
//   --port         TCP port on 127.0.0.1; 0 (default) picks an ephemeral port.
//   --resource     resource indicator (RFC 8707) of a protected MCP server, e.g.
//                  http://127.0.0.1:8123/mcp. Repeatable. More can be added at
//                  run time with POST /__test/resources.
//   --access-ttl   access token lifetime in seconds (default 300).
//   --refresh-ttl  refresh token lifetime in seconds (default 86400).
//   --device-interval  the `interval` (seconds) device authorization answers
//                  carry (default 1: tests need not wait RFC 8628's 5 s).
//   --keys-file    JSON file holding the RS256 signing JWK. Created if missing,
//                  reused if present, so a restarted server keeps its signing key
//                  (tokens issued before a restart still verify at the MCP server).
//
// When ready it prints exactly ONE line to stdout:
//   {"issuer": "http://127.0.0.1:PORT", "port": PORT}
// Everything else (oidc-provider warnings and notices) goes to stderr.
// SIGTERM / SIGINT close the server and exit 0.
//
// Test-only endpoints (handled before oidc-provider sees the request):
//   GET  /__test/stats           counters, see `stats` below
//   POST /__test/reset-stats     zero the counters
//   POST /__test/forget-clients  delete every dynamically registered client
//                                (simulates "the server forgot our client")
//   POST /__test/resources       body {"resource": URL}: accept another resource
//   POST /__test/outage          body {"status": 503}: the token endpoint answers
//                                that status (a server outage); {"status": 0} ends it
//   POST /__test/device-slow-down  body {"count": N}: the next N device_code polls
//                                that would be authorization_pending answer slow_down
//
// Device login (RFC 8628) is on: POST /device/auth, and the user's page at
// /device (enter the code, confirm, then the same login and consent forms).
//
// Interactions use oidc-provider's devInteractions (login form: any login name
// and any password; then a consent form), which tests drive with
// tests/helpers/browser.py.

// oidc-provider prints "NOTICE"s with console.info (stdout). stdout is reserved
// for the ready line, so route console.log/info to stderr before importing it.
console.log = console.error;
console.info = console.error;

import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import { parseArgs } from 'node:util';

const { Provider, errors } = await import('oidc-provider');

// ---------------------------------------------------------------- arguments --

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    resource: { type: 'string', multiple: true, default: [] },
    'access-ttl': { type: 'string', default: '300' },
    'refresh-ttl': { type: 'string', default: '86400' },
    'keys-file': { type: 'string' },
    'device-interval': { type: 'string', default: '1' },
  },
  strict: true,
});

function intArg(name) {
  const value = Number(args[name]);
  if (!Number.isInteger(value) || value < 0) {
    console.error(`invalid --${name}: ${args[name]}`);
    process.exit(2);
  }
  return value;
}

const requestedPort = intArg('port');
const accessTtl = intArg('access-ttl');
const refreshTtl = intArg('refresh-ttl');
const deviceInterval = intArg('device-interval');
let slowDownsLeft = 0;
const resources = new Set(args.resource);

// ------------------------------------------------------------ memory adapter --
// oidc-provider's bundled memory adapter keeps its store private, so it cannot
// be enumerated or cleared per model. This tiny Map-based adapter can:
// one Map per model name, honouring expiresIn, plus the grant/session indexes
// oidc-provider relies on (revokeByGrantId, findByUid).

const stores = new Map(); // model -> Map(id -> { payload, expiresAt })
const grantIndex = new Map(); // grantId -> Set("Model:id")
const sessionUids = new Map(); // Session uid -> Session id
const userCodes = new Map(); // device flow user code -> id (unused, for completeness)
const GRANTABLE = new Set([
  'AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode',
  'BackchannelAuthenticationRequest', 'PreAuthorizedCode',
]);

function storeFor(model) {
  if (!stores.has(model)) stores.set(model, new Map());
  return stores.get(model);
}

function liveEntry(store, id) {
  const entry = store.get(id);
  if (entry && entry.expiresAt !== undefined && entry.expiresAt <= Date.now()) {
    store.delete(id);
    return undefined;
  }
  return entry;
}

class MemoryAdapter {
  constructor(model) {
    this.model = model;
    this.store = storeFor(model);
  }

  async upsert(id, payload, expiresIn) {
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : undefined;
    this.store.set(id, { payload, expiresAt });
    if (this.model === 'Session' && payload.uid) sessionUids.set(payload.uid, id);
    if (payload.userCode) userCodes.set(payload.userCode, id);
    if (GRANTABLE.has(this.model) && payload.grantId) {
      if (!grantIndex.has(payload.grantId)) grantIndex.set(payload.grantId, new Set());
      grantIndex.get(payload.grantId).add(`${this.model}:${id}`);
    }
  }

  async find(id) {
    return liveEntry(this.store, id)?.payload;
  }

  async findByUid(uid) {
    const id = sessionUids.get(uid);
    return id === undefined ? undefined : this.find(id);
  }

  async findByUserCode(userCode) {
    const id = userCodes.get(userCode);
    return id === undefined ? undefined : this.find(id);
  }

  async consume(id) {
    const entry = liveEntry(this.store, id);
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    this.store.delete(id);
  }

  async revokeByGrantId(grantId) {
    for (const key of grantIndex.get(grantId) ?? []) {
      const sep = key.indexOf(':');
      stores.get(key.slice(0, sep))?.delete(key.slice(sep + 1));
    }
    grantIndex.delete(grantId);
  }

  // Test helpers, not part of the adapter contract.
  static clearModel(model) {
    const store = stores.get(model);
    const n = store ? store.size : 0;
    store?.clear();
    return n;
  }

  static countModel(model) {
    const store = stores.get(model);
    if (!store) return 0;
    return [...store.keys()].filter((id) => liveEntry(store, id)).length;
  }
}

// --------------------------------------------------------------------- stats --

function emptyStats() {
  return {
    // successful token endpoint responses, by grant_type
    grants: {},
    // failed token endpoint requests, by OAuth error code, and by grant_type
    grant_errors: {},
    grant_errors_by_grant_type: {},
    // successful (HTTP 200) revocation requests; oidc-provider has no
    // "revocation.success" event, so a middleware counts them, split by what
    // the presented token turned out to be (unknown = not found / not revocable)
    revocations: { total: 0, refresh_token: 0, access_token: 0, unknown: 0 },
    revocation_errors: {},
    // authorization endpoint outcomes (redirects back to the client)
    authorizations: { success: 0, errors: {} },
    // dynamic client registration (RFC 7591) and management (RFC 7592)
    registrations: { created: 0, updated: 0, deleted: 0, errors: {} },
    // device login (RFC 8628): authorizations handed out, polls answered by error
    device: { authorizations: 0, polls: {}, slow_downs_sent: 0 },
  };
}

let stats = emptyStats();
const bump = (obj, key) => { obj[key] = (obj[key] ?? 0) + 1; };

// -------------------------------------------------------------- signing key --

function signingKey() {
  const file = args['keys-file'];
  if (file && fs.existsSync(file)) {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  }
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = {
    ...privateKey.export({ format: 'jwk' }),
    kid: crypto.randomUUID(),
    alg: 'RS256',
    use: 'sig',
  };
  if (file) fs.writeFileSync(file, JSON.stringify(jwk), { mode: 0o600 });
  return jwk;
}

// -------------------------------------------------------------- HTTP server --

let providerCallback; // set once the Provider exists (it needs the bound port)

function sendJson(res, status, body) {
  const data = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(data);
}

async function readJson(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const text = Buffer.concat(chunks).toString('utf8');
  return text ? JSON.parse(text) : {};
}

async function handleTestEndpoint(req, res, path) {
  if (req.method === 'GET' && path === '/__test/stats') {
    return sendJson(res, 200, {
      ...stats,
      clients: MemoryAdapter.countModel('Client'),
      resources: [...resources],
    });
  }
  if (req.method === 'POST' && path === '/__test/reset-stats') {
    stats = emptyStats();
    return sendJson(res, 200, { ok: true });
  }
  if (req.method === 'POST' && path === '/__test/forget-clients') {
    return sendJson(res, 200, { forgotten: MemoryAdapter.clearModel('Client') });
  }
  if (req.method === 'POST' && path === '/__test/outage') {
    // body {"status": 503} makes the token endpoint answer that status
    // without touching any grant; {"status": 0} ends the outage.
    const body = await readJson(req).catch(() => ({}));
    outageStatus = Number(body.status) || 0;
    return sendJson(res, 200, { outage: outageStatus });
  }
  if (req.method === 'POST' && path === '/__test/device-slow-down') {
    const body = await readJson(req).catch(() => ({}));
    slowDownsLeft = Number(body.count) || 0;
    return sendJson(res, 200, { slow_downs_left: slowDownsLeft });
  }
  if (req.method === 'POST' && path === '/__test/resources') {
    let body;
    try {
      body = await readJson(req);
      new URL(body.resource); // eslint-disable-line no-new
    } catch {
      return sendJson(res, 400, { error: 'body must be {"resource": "<absolute URL>"}' });
    }
    resources.add(body.resource);
    return sendJson(res, 200, { resources: [...resources] });
  }
  return sendJson(res, 404, { error: 'unknown test endpoint' });
}

let outageStatus = 0;

const server = http.createServer((req, res) => {
  const path = new URL(req.url, 'http://127.0.0.1').pathname;
  if (outageStatus && path === '/token') {
    stats.outage_rejections = (stats.outage_rejections || 0) + 1;
    res.writeHead(outageStatus, { 'content-type': 'text/html' });
    res.end('<html><body>Service Unavailable</body></html>');
    return;
  }
  if (path.startsWith('/__test/')) {
    handleTestEndpoint(req, res, path).catch((err) => {
      console.error('test endpoint failed:', err);
      if (!res.headersSent) sendJson(res, 500, { error: String(err) });
    });
    return;
  }
  if (!providerCallback) {
    sendJson(res, 503, { error: 'starting' });
    return;
  }
  providerCallback(req, res);
});

// Bind first so the issuer can carry the real (possibly ephemeral) port.
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(requestedPort, '127.0.0.1', resolve);
});
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

// ----------------------------------------------------------------- provider --

// mcp:admin: the test MCP server's admin_echo tool asks for it by a scope challenge (step-up).
const SCOPES = 'mcp:read mcp:write mcp:admin';

const configuration = {
  adapter: MemoryAdapter,
  // Any login name is an account; its name is the `sub`.
  async findAccount(ctx, sub) {
    return { accountId: sub, async claims() { return { sub }; } };
  },
  jwks: { keys: [signingKey()] },
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  scopes: ['openid', 'offline_access', 'mcp:read', 'mcp:write', 'mcp:admin'],
  claims: { openid: ['sub'] },
  // OAuth 2.1: authorization code flow only (no implicit / hybrid).
  responseTypes: ['code'],
  // PKCE for every client. oidc-provider v9 only implements S256.
  pkce: { required: () => true },
  // Always rotate refresh tokens: every refresh_token grant consumes the
  // presented token and returns a new one. Reusing a consumed refresh token
  // is treated as replay and revokes the whole grant.
  rotateRefreshToken: () => true,
  ttl: {
    AccessToken: accessTtl,
    AuthorizationCode: 60,
    IdToken: 3600,
    RefreshToken: refreshTtl,
    Grant: Math.max(refreshTtl, 86400),
    Session: 86400,
    Interaction: 600,
  },
  features: {
    devInteractions: { enabled: true },
    registration: { enabled: true, initialAccessToken: false },
    registrationManagement: { enabled: true },
    deviceFlow: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // No implicit resource: a client must send `resource` to get an access
      // token for the MCP server.
      defaultResource: (ctx, client, oneOf) => oneOf ?? undefined,
      // Refresh / code exchange without `resource` reuse the granted one.
      useGrantedResource: () => true,
      getResourceServerInfo(ctx, resourceIndicator) {
        if (!resources.has(resourceIndicator)) {
          throw new errors.InvalidTarget();
        }
        return {
          scope: SCOPES,
          audience: resourceIndicator,
          accessTokenFormat: 'jwt',
          accessTokenTTL: accessTtl,
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  // Plain-text error page (the default HTML one is noisy and "should change").
  renderError(ctx, out) {
    ctx.type = 'text';
    ctx.body = Object.entries(out).map(([k, v]) => `${k}: ${v}`).join('\n');
  },
};

const provider = new Provider(issuer, configuration);

provider.on('grant.success', (ctx) => bump(stats.grants, ctx.oidc.params.grant_type));
provider.on('grant.error', (ctx, err) => {
  const code = err.error ?? 'server_error';
  bump(stats.grant_errors, code);
  const grantType = ctx.oidc?.params?.grant_type ?? 'unknown';
  stats.grant_errors_by_grant_type[grantType] ??= {};
  bump(stats.grant_errors_by_grant_type[grantType], code);
});
provider.on('authorization.success', () => { stats.authorizations.success += 1; });
provider.on('authorization.error', (ctx, err) => bump(stats.authorizations.errors, err.error ?? 'server_error'));
provider.on('registration_create.success', () => { stats.registrations.created += 1; });
provider.on('registration_update.success', () => { stats.registrations.updated += 1; });
provider.on('registration_delete.success', () => { stats.registrations.deleted += 1; });
for (const event of ['registration_create.error', 'registration_read.error',
  'registration_update.error', 'registration_delete.error']) {
  provider.on(event, (ctx, err) => bump(stats.registrations.errors, err.error ?? 'server_error'));
}
provider.on('revocation.error', (ctx, err) => bump(stats.revocation_errors, err.error ?? 'server_error'));
provider.on('server_error', (ctx, err) => console.error('oidc-provider server_error:', err));

// Device login: the interval this server asks for, and slow_down on request.
provider.use(async (ctx, next) => {
  await next();
  if (ctx.oidc?.route === 'device_authorization' && ctx.status === 200 && ctx.body) {
    ctx.body.interval = deviceInterval;
    stats.device.authorizations += 1;
  }
  if (ctx.oidc?.route === 'token' && ctx.oidc.params?.grant_type === 'urn:ietf:params:oauth:grant-type:device_code'
    && ctx.status === 400 && ctx.body?.error) {
    if (ctx.body.error === 'authorization_pending' && slowDownsLeft > 0) {
      slowDownsLeft -= 1;
      stats.device.slow_downs_sent += 1;
      ctx.body = { error: 'slow_down', error_description: 'poll less often' };
    }
    bump(stats.device.polls, ctx.body.error);
  }
});

// Revocation has no success event: observe the finished request instead.
provider.use(async (ctx, next) => {
  await next();
  if (ctx.oidc?.route === 'revocation' && ctx.status === 200) {
    stats.revocations.total += 1;
    const { entities } = ctx.oidc;
    if (entities.RefreshToken) stats.revocations.refresh_token += 1;
    else if (entities.AccessToken) stats.revocations.access_token += 1;
    else stats.revocations.unknown += 1;
  }
});

providerCallback = provider.callback();

// ------------------------------------------------------------------ lifecycle --

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  // Never hang a test teardown on a stuck socket.
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

process.stdout.write(`${JSON.stringify({ issuer, port })}\n`);
