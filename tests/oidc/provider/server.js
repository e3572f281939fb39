// A real OpenID Connect provider for Moorage's tests: panva/oidc-provider (the certified
// Node.js implementation) on a loopback port, with one registered client, a few users with
// groups, and plain HTML login and consent pages whose forms the tests post (what a browser
// would do). Configuration comes from the environment:
//   OP_PORT           port to listen on (127.0.0.1 only)
//   OP_CLIENTS        JSON array of client registrations (client_id, client_secret, redirect_uris)
//   OP_USERS          JSON object: login -> {password, name, email, groups}
//   OP_ID_TOKEN_TTL   ID token lifetime in seconds (default 600)
// It prints "ready <issuer>" on standard output once it listens.
import http from 'node:http';
import { generateKeyPair, exportJWK } from 'jose';
import Provider from 'oidc-provider';

const port = Number(process.env.OP_PORT || 0);
const issuer = `http://127.0.0.1:${port}`;
const clients = JSON.parse(process.env.OP_CLIENTS || '[]');
const users = JSON.parse(process.env.OP_USERS || '{}');
const idTokenTTL = Number(process.env.OP_ID_TOKEN_TTL || 600);

const { privateKey } = await generateKeyPair('RS256', { extractable: true });
const jwk = { ...(await exportJWK(privateKey)), kid: 'test-rs256', alg: 'RS256', use: 'sig' };

const provider = new Provider(issuer, {
  clients,
  jwks: { keys: [jwk] },
  cookies: { keys: ['moorage-test-cookie-key-0123456789'] },
  pkce: { required: () => true },
  scopes: ['openid', 'profile', 'email', 'groups'],
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  // Claims of the granted scopes go into the ID token itself (Moorage reads groups from it).
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: false } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  ttl: { IdToken: idTokenTTL, AccessToken: 600, Interaction: 600, Session: 3600, Grant: 3600, AuthorizationCode: 60 },
  async findAccount(ctx, id) {
    const user = users[id];
    if (!user) return undefined;
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          name: user.name,
          preferred_username: id,
          email: user.email,
          email_verified: true,
          groups: user.groups || [],
        };
      },
    };
  },
});

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const page = (title, body) =>
  `<!doctype html><html><head><meta charset="utf-8"><title>${escape(title)}</title></head><body>${body}</body></html>`;

function loginPage(uid, error) {
  return page(
    'Sign in',
    `<h1>Sign in</h1>${error ? `<p class="error">${escape(error)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}/login">
<input name="login" autocomplete="username"><input name="password" type="password">
<button type="submit">Sign in</button></form>`,
  );
}

function consentPage(uid, clientId, scopes) {
  return page(
    'Authorize',
    `<h1>Authorize ${escape(clientId)}</h1><p>Scopes: ${escape(scopes.join(' '))}</p>
<form method="post" action="/interaction/${escape(uid)}/confirm"><button type="submit">Continue</button></form>`,
  );
}

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 65536) throw new Error('form too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function send(res, status, html) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(html);
}

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) return send(res, 400, page('Error', 'interaction mismatch'));
  const { prompt, params } = details;
  if (req.method === 'GET' && !action) {
    if (prompt.name === 'login') return send(res, 200, loginPage(uid));
    const scopes = [...(prompt.details.missingOIDCScope || [])];
    return send(res, 200, consentPage(uid, params.client_id, scopes));
  }
  if (req.method === 'POST' && action === 'login') {
    const form = await readForm(req);
    const login = form.get('login') || '';
    const user = Object.hasOwn(users, login) ? users[login] : undefined;
    if (!user || user.password !== form.get('password')) {
      return send(res, 200, loginPage(uid, 'Invalid login or password.'));
    }
    return provider.interactionFinished(req, res, { login: { accountId: login } }, { mergeWithLastSubmission: false });
  }
  if (req.method === 'POST' && action === 'confirm') {
    await readForm(req);
    const { accountId } = details.session;
    let { grantId } = details;
    const grant = grantId
      ? await provider.Grant.find(grantId)
      : new provider.Grant({ accountId, clientId: params.client_id });
    if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
    if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
    for (const [indicator, scope] of Object.entries(prompt.details.missingResourceScopes || {})) {
      grant.addResourceScope(indicator, scope.join(' '));
    }
    grantId = await grant.save();
    const result = details.grantId ? {} : { consent: { grantId } };
    return provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
  }
  return send(res, 405, page('Error', 'method not allowed'));
}

const callback = provider.callback();
const server = http.createServer(async (req, res) => {
  const match = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login|confirm))?$/.exec(req.url.split('?')[0]);
  if (!match) return callback(req, res);
  try {
    await interaction(req, res, match[1], match[2]);
  } catch (err) {
    send(res, 400, page('Error', escape(err.message)));
  }
});

server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`ready ${issuer}\n`);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => server.close(() => process.exit(0)));
