#!/usr/bin/env bash
# Three hops of delegation with token exchange: app → orchestrator → specialist → tool, then a Txn-Token,
# the lineage and a cascade revocation. Run against a fresh `npm start`: ADMIN=$(cat data/admin-token) bash examples/three-hop-delegation.sh
# The server is $AS (its issuer; default http://localhost:8080) and its trust domain $TRUST_DOMAIN (default
# agent-sts.local), as in the README's snippets and the other examples.
set -euo pipefail
: "${ADMIN:?set ADMIN to the admin token, e.g. ADMIN=\$(cat data/admin-token)}"
AS=${AS:-http://localhost:8080}
TD=${TRUST_DOMAIN:-agent-sts.local}
H="Authorization: Bearer $ADMIN"
TMP=$(mktemp -d)
reg() { curl -s -X POST $AS/admin/agents -H "$H" -H 'Content-Type: application/json' -d "$1" | node -p 'JSON.parse(require("fs").readFileSync(0)).client_secret'; }
TX=urn:ietf:params:oauth:grant-type:token-exchange
AT=urn:ietf:params:oauth:token-type:access_token
id() { printf 'spiffe%%3A%%2F%%2F%s%%2Fagents%%2F%s' "$TD" "$1"; }   # form-encoded client_id
field() { node -p "JSON.parse(require('fs').readFileSync(0)).$1"; }
decode() { node -p "JSON.stringify(JSON.parse(Buffer.from(require('fs').readFileSync(0,'utf8').trim().split('.')[1],'base64url')))"; }

# Three agents: the user-facing app, an orchestrator that acts for it, a specialist that calls the tool.
APP=$(reg '{"id":"spiffe://'"$TD"'/agents/app","scopes":["orders:read","orders:write","search"],"audiences":["https://orchestrator.example/api"]}')
ORCH=$(reg '{"id":"spiffe://'"$TD"'/agents/orchestrator","grant_types":["urn:ietf:params:oauth:grant-type:token-exchange"],"scopes":["orders:read","search"],"audiences":["https://specialist.example/api"],"token_exchange":{"may_act_for_others":true}}')
SPEC=$(reg '{"id":"spiffe://'"$TD"'/agents/specialist","grant_types":["urn:ietf:params:oauth:grant-type:token-exchange"],"scopes":["search"],"audiences":["https://tools.example/mcp"],"token_exchange":{"may_act_for_others":true}}')

# Hop 0: the app's token, sent to the orchestrator.
T0=$(curl -s $AS/token -u "$(id app):$APP" -d grant_type=client_credentials | field access_token)
# Hop 1: the orchestrator exchanges it for a narrower token to call the specialist.
T1=$(curl -s $AS/token -u "$(id orchestrator):$ORCH" -d grant_type=$TX -d subject_token=$T0 -d subject_token_type=$AT \
  -d resource=https://specialist.example/api -d scope='orders:read search' | field access_token)
# Hop 2: the specialist narrows again to call the tool.
curl -s $AS/token -u "$(id specialist):$SPEC" -d grant_type=$TX -d subject_token=$T1 -d subject_token_type=$AT \
  -d resource=https://tools.example/mcp -d scope=search | tee $TMP/hop2.json
T2=$(field access_token < $TMP/hop2.json)
# The tool's side: a Txn-Token for the call chain inside the trust domain.
curl -s $AS/token -u "$(id specialist):$SPEC" -d grant_type=$TX -d subject_token=$T2 -d subject_token_type=$AT \
  -d requested_token_type=urn:ietf:params:oauth:token-type:txn_token -d audience=$TD -d scope=search \
  -d request_details='{"tool":"search","query":"open orders"}' | tee $TMP/txn.json
echo; echo T0; echo $T0 | decode; echo T1; echo $T1 | decode; echo T2; echo $T2 | decode; echo TXN; field access_token < $TMP/txn.json | decode
JTI2=$(echo $T2 | decode | field jti)
curl -s "$AS/admin/tokens/$JTI2/lineage" -H "$H" | node -p 'const l=JSON.parse(require("fs").readFileSync(0)); JSON.stringify({ancestors: l.ancestors.map(t=>[t.jti,t.client_id]), token: l.token.jti, descendants: l.descendants.map(t=>[t.type,t.jti])})'
# Revoking the app's token revokes everything exchanged from it.
curl -s -o /dev/null -w '%{http_code}\n' $AS/token/revocation -u "$(id app):$APP" -d token=$T0
curl -s $AS/token/introspection -u "$(id specialist):$SPEC" -d token=$T2; echo
