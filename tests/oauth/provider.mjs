// A real OAuth 2.0 authorization server for the tests: the certified `oidc-provider` package, configured
// with PKCE (S256) required, refresh-token rotation (a reused refresh token revokes the grant), short token
// lifetimes, token revocation, and its development login page (any user name and password).
// Usage: node provider.mjs PORT REDIRECT_URI [ACCESS_TOKEN_TTL_SECONDS]
import Provider from 'oidc-provider';

const port = Number(process.argv[2]);
const redirect = process.argv[3];
const ttl = Number(process.argv[4] || 3);
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: [
    { client_id: 'cc-basic', client_secret: 'cc-basic-secret', grant_types: ['client_credentials'], response_types: [],
      redirect_uris: [], token_endpoint_auth_method: 'client_secret_basic', scope: 'read write' },
    { client_id: 'cc-post', client_secret: 'cc-post-secret', grant_types: ['client_credentials'], response_types: [],
      redirect_uris: [], token_endpoint_auth_method: 'client_secret_post', scope: 'read write' },
    { client_id: 'app', client_secret: 'app-secret', grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'], redirect_uris: [redirect], token_endpoint_auth_method: 'client_secret_basic',
      scope: 'openid offline_access' },
  ],
  scopes: ['openid', 'offline_access', 'read', 'write'],
  features: {
    clientCredentials: { enabled: true },
    devInteractions: { enabled: true },
    revocation: { enabled: true },
  },
  pkce: { required: () => true, methods: ['S256'] },
  rotateRefreshToken: true,
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  ttl: { AccessToken: ttl, ClientCredentials: ttl, AuthorizationCode: 60, RefreshToken: 3600, Grant: 3600,
         Session: 3600, Interaction: 3600, IdToken: 3600 },
  // Consent is given once the user logs in (the tests walk the login page only).
  loadExistingGrant: async (ctx) => {
    const id = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (id) return ctx.oidc.provider.Grant.find(id);
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid offline_access');
    await grant.save();
    return grant;
  },
});
provider.proxy = false;
// Token requests, counted per grant type, for the tests (GET /_stats).
const stats = {};
const grants = new Set();
const accessTokens = [];
provider.on('grant.success', (ctx) => {
  const t = ctx.oidc.params.grant_type;
  stats[t] = (stats[t] || 0) + 1;
  const g = ctx.oidc.entities.Grant;
  if (g) grants.add(g.jti);
  const at = ctx.oidc.entities.AccessToken;
  if (at) accessTokens.push(at);
});
provider.on('authorization.success', (ctx) => {
  const g = ctx.oidc.entities.Grant;
  if (g) grants.add(g.jti);
});
provider.on('grant.error', (ctx, err) => {
  const k = `error:${ctx.oidc.params?.grant_type}:${err.error}`;
  stats[k] = (stats[k] || 0) + 1;
});
// A protected API: answers who the bearer token belongs to, 401 for a token that is unknown, expired or
// revoked. `/_stats` counts token requests per grant type.
provider.use(async (ctx, next) => {
  if (ctx.path === '/_stats') { ctx.body = stats; return; }
  // The user revokes access at the provider: every grant goes (its refresh tokens stop working).
  // Access tokens die early (revoked, or the provider restarted): the API answers 401 until refreshed.
  if (ctx.path === '/_revoke_access') {
    for (const at of accessTokens.splice(0)) await at.destroy();
    ctx.body = { revoked: true };
    return;
  }
  if (ctx.path === '/_revoke_all') {
    for (const id of grants) {
      const g = await provider.Grant.find(id);
      if (g) await g.destroy();
    }
    grants.clear();
    ctx.body = { revoked: true };
    return;
  }
  if (ctx.path === '/api/whoami') {
    const value = (ctx.get('authorization') || '').replace(/^Bearer /, '');
    const token = (await provider.AccessToken.find(value)) || (await provider.ClientCredentials.find(value));
    if (!token || token.isExpired) { ctx.status = 401; ctx.body = { error: 'invalid_token' }; return; }
    stats.api = (stats.api || 0) + 1;
    ctx.body = { client: token.clientId, account: token.accountId || null, scope: token.scope || null };
    return;
  }
  await next();
});
provider.on('server_error', (ctx, err) => console.error('server_error', err));
provider.listen(port, '127.0.0.1', () => console.log(`ready ${issuer}`));
