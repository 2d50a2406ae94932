// A real OpenID Provider for the tests: npm `oidc-provider` (9.x), configured by the test.
//
// Usage: OIDC_PROVIDER_MODULE=file:///.../oidc-provider/lib/index.js node oidc_provider.mjs
//        CONFIG.json  (the tests' oidc_kit.py installs the package and writes the file)
// CONFIG: {"port", "clients": [client metadata], "keys": [private JWKs], "scopes": [...],
//          "ttl": seconds of an access token}
// Prints "listening <issuer>" on stdout once it serves. A line "rotate" on stdin makes the
// next key the signing key (the JWKS publishes it first and keeps the old one); the
// provider answers "rotated <kid>". It starts publishing only the first key, so that a
// resource server sees the new key's kid for the first time at the rotation. Every resource indicator (RFC 8707) gets a JWT access
// token whose audience is that resource, with the scopes the client asked for.
import http from 'node:http';
import fs from 'node:fs';
import readline from 'node:readline';
// the package is installed under .cache/ (oidc_kit.py): its entry point comes as a file URL
const { default: Provider } = await import(process.env.OIDC_PROVIDER_MODULE);

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const issuer = `http://127.0.0.1:${config.port}`;
let keys = config.keys.slice(0, 1);

function build() {
  const provider = new Provider(issuer, {
    clients: config.clients,
    jwks: { keys },
    scopes: ['openid', 'offline_access', ...config.scopes],
    clientDefaults: { grant_types: ['authorization_code'], response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic', id_token_signed_response_alg: 'RS256' },
    features: {
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      devInteractions: { enabled: false },
      registration: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: (ctx, client, oneOf) => oneOf || undefined,
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resourceIndicator) => ({
          scope: config.scopes.join(' '),
          audience: resourceIndicator,
          accessTokenTTL: config.ttl || 600,
          accessTokenFormat: config.opaque ? 'opaque' : 'jwt',
          jwt: { sign: { alg: keys[0].alg || 'RS256' } },
        }),
      },
    },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    // the tests' fake browser signs in as "user" and approves everything
    loadExistingGrant: async (ctx) => {
      const grant = new ctx.oidc.provider.Grant({
        clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
      grant.addOIDCScope(['openid', 'offline_access', ...config.scopes].join(' '));
      for (const resource of [].concat(ctx.oidc.params.resource || [])) {
        grant.addResourceScope(resource, config.scopes.join(' '));
      }
      await grant.save();
      return grant;
    },
    pkce: { required: () => true },
    ttl: { ClientCredentials: config.ttl || 600, AccessToken: config.ttl || 600 },
  });
  provider.on('server_error', (ctx, err) => console.error('server_error', err));
  return provider;
}

// The sign-in page: whoever comes is "user", who approves everything (the tests' fake browser
// follows the redirects, with its cookies).
async function interact(provider, req, res) {
  const details = await provider.interactionDetails(req, res);
  let result = { login: { accountId: 'user' } };
  if (details.prompt.name === 'consent') {
    const grant = new provider.Grant({ clientId: details.params.client_id, accountId: 'user' });
    grant.addOIDCScope(['openid', 'offline_access', ...config.scopes].join(' '));
    for (const resource of [].concat(details.params.resource || [])) {
      grant.addResourceScope(resource, config.scopes.join(' '));
    }
    result = { consent: { grantId: await grant.save() } };
  }
  await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
}

let current = build();
let handle = current.callback();
const server = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url.startsWith('/interaction/')) {
    interact(current, req, res).catch((err) => {
      console.error('interaction', err);
      res.statusCode = 500;
      res.end(String(err));
    });
    return;
  }
  handle(req, res);
});
server.listen(config.port, '127.0.0.1', () => console.log(`listening ${issuer}`));

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  if (line.trim() === 'rotate') {
    keys = [config.keys[keys.length % config.keys.length], ...keys].slice(0, config.keys.length);
    current = build();
    handle = current.callback();
    console.log(`rotated ${keys[0].kid}`);
  }
}).on('close', () => process.exit(0));
