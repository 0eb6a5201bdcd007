#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/ from the shapes the tests use.

Each input is a fixed-length selector, then fields separated by NUL bytes, in the order each
target's `check` documents. Run from
fuzz/; the seeds are committed, so this is only needed to change them.
"""
import base64, hashlib, json, os, pathlib

def b64(s):
    return base64.urlsafe_b64encode(s.encode()).decode().rstrip("=")

def jwt(header, claims, sig="c2lnbmF0dXJlLW5ldmVyLXNob3du"):
    return f"{b64(json.dumps(header))}.{b64(json.dumps(claims))}.{sig}"

NOW = 1_735_812_000
TID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
HDR = {"alg": "RS256", "typ": "JWT", "kid": "k1"}
BASE = {
    "aud": "https://cognitiveservices.azure.com",
    "iss": f"https://sts.windows.net/{TID}/",
    "tid": TID,
    "oid": "aaaaaaaa-1111-2222-3333-444444444444",
    "appid": "04b07795-8ddb-461a-bbee-02f9e1bf7b46",
    "idtyp": "app",
    "iat": NOW - 600,
    "nbf": NOW - 600,
    "exp": NOW + 2520,
    "roles": ["a"],
    "scp": "user_impersonation",
}
TOKEN = jwt(HDR, BASE)

def write(target, name, sel, *fields):
    """The selector's fixed-length bytes, then the fields separated by NUL."""
    d = pathlib.Path("corpus") / target
    d.mkdir(parents=True, exist_ok=True)
    data = sel + b"\0".join(f if isinstance(f, bytes) else f.encode() for f in fields)
    (d / name).write_bytes(data)

# inbound: selector, api-key, Authorization, x-ms-tenant-id
# selector: low 2 bits pick the config, 0x04 api-key, 0x08 Authorization, 0x10 tenant header
basic = base64.b64encode(b"app-1:s3cr:et").decode()
write("inbound", "api_key", bytes([0x04]), "ep-virtual-Key-0123456789", "", "")
write("inbound", "legacy", bytes([0x04]), "0123456789abcdef0123456789ABCDEF", "", "")
write("inbound", "expired", bytes([0x08]), "", "Bearer ep-expired-Key-9876543210", "")
write("inbound", "wrong_key", bytes([0x04]), "nope", "", "")
write("inbound", "bearer_key", bytes([0x08]), "", "bearer   ep-virtual-Key-0123456789 ", "")
write("inbound", "basic", bytes([0x08]), "", f"Basic {basic}", "")
write("inbound", "basic_tenant", bytes([0x18]), "", f"Basic {basic}", "T2.example")
write("inbound", "digest", bytes([0x08]), "", "Digest abc", "")
write("inbound", "sidecar", bytes([0x05]), "whatever", "", "")
other = dict(BASE, tid="11111111-2222-3333-4444-555555555555")
write("inbound", "entra_other_tenant", bytes([0x0a]), "", f"Bearer {jwt(HDR, other)}", "")
write("inbound", "entra_hs256", bytes([0x0a]), "", f"Bearer {jwt(dict(HDR, alg='HS256'), BASE)}", "")
write("inbound", "entra_bad_json", bytes([0x0a]), "", "Bearer eyJhbGciOiJSUzI1NiJ9.eyJub3QganNvbg.c2ln", "")

# inbound with a query string (0x20) and WebSocket subprotocols (0x40, values separated by LF)
write("inbound", "query_api_key", bytes([0x20]), "", "", "", "api-version=2024-10-21&api-key=ep-virtual-Key-0123456789", "")
write("inbound", "query_subscription_key", bytes([0x20]), "", "", "", "Subscription-Key=0123456789abcdef0123456789ABCDEF&deployment=gpt-4o", "")
write("inbound", "query_encoded", bytes([0x20]), "", "", "", "api%2Dkey=ep-virtual-Key-0123456789%3D&x=a+b&subscription-key=", "")
write("inbound", "query_blank_then_key", bytes([0x23]), "", "", "", "api-key=+&API-KEY=ep-expired-Key-9876543210&&", "")
write("inbound", "query_and_header", bytes([0x24]), "nope-Key-0123456789", "", "", "api-key=ep-virtual-Key-0123456789", "")
write("inbound", "subprotocol_key", bytes([0x40]), "", "", "", "", "realtime, openai-insecure-api-key.ep-virtual-Key-0123456789, openai-beta.realtime-v1")
write("inbound", "subprotocol_values", bytes([0x41]), "", "", "", "", "realtime\nopenai-insecure-api-key.\nopenai-insecure-api-key.wrong-Key-12345678")
write("inbound", "query_authorization", bytes([0x20]), "", "", "", "language=en-US&Authorization=Bearer%20ep-virtual-Key-0123456789&X-ConnectionId=c1", "")
write("inbound", "query_subscription_key_region", bytes([0x20]), "", "", "", "Ocp-Apim-Subscription-Key=ep-virtual-Key-0123456789&Subscription-Region=westeurope&to=de", "")
write("inbound", "query_and_subprotocol", bytes([0x62]), "", "", "", "deployment=gpt-4o-realtime&api-key=", "openai-insecure-api-key.0123456789abcdef0123456789ABCDEF,realtime")

# jwt: selector (wrap<<1, target, offset h, offset m), header JSON, claims JSON, signature, now
def jwt_seed(name, claims, sel=bytes([0, 0, 24, 0]), header=HDR, sig="c2lnbmF0dXJlLW5ldmVyLXNob3du", now=b""):
    write("jwt", name, sel, json.dumps(header), json.dumps(claims), sig, now)
jwt_seed("accepted", BASE)
jwt_seed("graph", dict(BASE, aud="https://graph.microsoft.com"), sel=bytes([2, 8, 25, 30]))
jwt_seed("arm_usgov", dict(BASE, aud="https://management.usgovcloudapi.net/", iss=f"https://login.microsoftonline.us/{TID}/v2.0"), sel=bytes([4, 2, 10, 0]))
jwt_seed("foundry_v2", dict(BASE, aud="https://ai.azure.com", ver="2.0", azp="bbbbbbbb-0000-0000-0000-000000000001", iss=f"https://login.microsoftonline.com/{TID}/v2.0"), sel=bytes([6, 1, 47, 59]))
jwt_seed("expired", dict(BASE, exp=NOW - 7200), sel=bytes([8, 16, 0, 0]))
jwt_seed("not_yet", dict(BASE, nbf=NOW + 7200), sel=bytes([10, 0, 46, 59]))
jwt_seed("far_future", dict(BASE, exp=253402300799, iat=-62135596800), sel=bytes([0, 0, 46, 59]))
jwt_seed("huge_exp", dict(BASE, exp=9223372036854775807, nbf=-9223372036854775808), sel=bytes([0, 0, 0, 0]))
jwt_seed("user_upn", dict(BASE, upn="someone@contoso.com", name="Some One", aud=["x", "y"]))
jwt_seed("mi", dict(BASE, xms_mirid="/subscriptions/s/resourcegroups/r/providers/Microsoft.ManagedIdentity/userAssignedIdentities/mi-1"))
jwt_seed("empty", {}, header={})
write("jwt", "raw_json", bytes([0x80, 0, 0, 0]) + json.dumps({"access_token": TOKEN, "expires_in": 3599}).encode())
write("jwt", "raw_error", bytes([0x80, 1, 30, 0]) + json.dumps({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided.\r\nTrace ID: x"}).encode())
write("jwt", "raw_header", bytes([0x80, 1, 30, 0]) + f"Authorization: Bearer {TOKEN}".encode())
write("jwt", "raw_jwe", bytes([0x80, 1, 30, 0]) + b"eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d")
write("jwt", "raw_keys", bytes([0x80, 1, 30, 0]) + b"sk-proj-abcdefghijklmnopqrstuvwxyz 0123456789abcdef0123456789abcdef")

# routing: selector (table, backend header, no-body bit), request target, body, backend header
chat = '{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}'
for name, sel, target, body, chosen in [
    ("deployment", 0, "/openai/deployments/gpt-4o-2024-08-06/chat/completions?api-version=2024-10-21", "", ""),
    ("deployment_model_name", 0, "/openai/deployments/gpt-4o/chat/completions", "", ""),
    ("unknown_deployment_chosen", 2, "/openai/deployments/my%20dep/embeddings?a=1&b=%20x", "", ""),
    ("encoded_slash", 0, "/openai/deployments/a%2Fb/chat/completions", "", ""),
    ("traversal", 0, "/openai/../admin", "", ""),
    ("encoded_dots", 0, "/openai/deployments/%2e%2e/chat/completions", "", ""),
    ("double_encoded", 2, "/openai/deployments/a%252Fb/chat/completions", "", ""),
    ("backslash", 4, "/openai/deployments/a%5Cb/x", "", ""),
    ("openai_chat", 0, "/v1/chat/completions", chat, ""),
    ("openai_responses_v1", 0, "/v1/responses?x=1", '{"model":"emb","input":"hi"}', ""),
    ("azure_v1", 4, "/openai/v1/chat/completions", '{"model":"gpt-4o-2024-08-06"}', ""),
    ("azure_v1_unknown", 6, "/openai/v1/responses", '{"model":"other"}', "local"),
    ("other_path", 1, "/models/chat/completions?api-version=2024-05-01-preview", "", ""),
    ("speech", 6, "/speechtotext/v3.2/transcriptions:submit", "", "east"),
    ("absolute_form", 1, "http://evil.example/v1/chat/completions", chat, ""),
    ("list_models", 0, "//v1//models/", "", ""),
    ("unicode", 2, "/openai/deployments/caf%C3%A9/chat/completions", "", ""),
    ("model_in_another_case", 0, "/v1/chat/completions", '{"mOdel":"gpt-4o","messages":[]}', ""),
]:
    write("routing", name, bytes([sel]), target, body, chosen)

# model_rewrite: selector (table, path), body
for name, sel, body in [
    ("chat", 1, chat),
    ("responses", 3, '{"model":"mini","input":"hi","temperature":0.7,"seed":18446744073709551615}'),
    ("azure_v1", 5, '{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true}}'),
    ("several", 0, chat),
    ("same", 2, '{"model":"same","input":[1,2,3]}'),
    ("unknown", 1, '{"model":"gpt-5"}'),
    ("no_model", 1, '{"messages":[]}'),
    ("model_number", 1, '{"model":3}'),
    ("array", 1, '["gpt-4o"]'),
    ("not_json", 1, "not json"),
    ("nested", 1, '{"model":"gpt-4o","tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"metadata":{"model":"keep"}}'),
    ("unicode", 1, '{"model":"gpt-4o","messages":[{"role":"user","content":"caf\\u00e9 \\ud83d\\ude00"}]}'),
    ("model_twice", 3, '{"model":"mini","Model":"mini","input":"hi"}'),
]:
    write("model_rewrite", name, bytes([sel]), body)

# config: selector (which variables are set), text
digest = hashlib.sha256(b"password").hexdigest()
configs = {
    "minimal": "[[backends]]\nname='a'\nendpoint='https://res.openai.azure.com'\n",
    "pasted_url": "[[backends]]\nname='a'\nendpoint='https://res.openai.azure.com/openai/deployments/gpt-4.1/chat/completions?api-version=2025-01-01-preview'\n",
    "full": f"""[server]
listen = "0.0.0.0:8080"
max_body_bytes = 1048576
workers = 2
debug = true
admin_key_sha256 = "{digest}"

[upstream]
connect_timeout_secs = 2.5
max_attempts = 2

[azure]
cloud = "public"

[identity]
kind = "client-secret"
tenant_id = "{TID}"
client_id = "app"
client_secret = "${{AZURE_CLIENT_SECRET}}"

[[backends]]
name = "east"
endpoint = "https://${{RES}}.openai.azure.com"
api = "v1"
deployments = ["gpt-4o"]
max_concurrent = 8

[[backends]]
name = "foundry"
endpoint = "https://x.services.ai.azure.com/"
scope = "https://ai.azure.com/.default"

[[models]]
name = "gpt-4o"
targets = [{{backend = "east", deployment = "gpt-4o"}}, {{backend = "foundry", deployment = "g", priority = 1, weight = 2}}]

[[keys]]
name = "team-a"
sha256 = "{digest}"
models = ["gpt-4o"]
expires = "2027-01-01T00:00:00Z"
requests_per_minute = 600

[inbound]
modes = ["key", "entra", "client-credentials"]

[inbound.entra]
tenants = ["{TID}"]
audiences = ["api://entra-proxy"]
passthrough = true

[inbound.client_credentials]
tenant_id = "{TID}"
allow_tenant_header = true
max_apps = 10
""",
    "unknown_key": "[server]\nlisten = \"127.0.0.1:1\"\nlisen = 1\n[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'\n",
    "unknown_top": "bogus = 1\n[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'\n",
    "syntax": "[server]\nlisten = \n",
    "env_missing": "[[backends]]\nname='${NOPE}'\nendpoint='https://${RES}.openai.azure.com'\n\"odd key\" = '${'\n",
    "cloud_mismatch": "[azure]\ncloud='usgov'\n[[backends]]\nname='a'\nendpoint='https://res.openai.azure.com'\n",
    "bad_values": "[server]\nlisten='nope'\nworkers=0\n[upstream]\nconnect_timeout_secs=-1\n[[backends]]\nname=''\nendpoint='ftp://u:p@x'\n[[keys]]\nname='k'\nsha256='abc'\n",
    "emulator": "[azure]\nemulator='http://127.0.0.1:9999'\n[identity]\nkind='managed-identity'\n[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1/'\n",
    "unicode_error": "[[backends]]\nname = 'é'\nendpoint = 'https://ré.openai.azure.com'\n€ = ",
}
for name, text in configs.items():
    write("config", name, bytes([3]), text)

# azure_error: selector (status, lo, hi, host, deployments, now, ctx bits, retry bit), retry-after, body, claims
samples = {
    "token_401": (0, '{"error":{"code":"401","message":"Unauthorized. Access token is missing, invalid, audience is incorrect (https://cognitiveservices.azure.com), or have expired."}}'),
    "invalid_key": (0, '{"error":{"code":"401","message":"Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource."}}'),
    "key_disabled": (0, '{"error":{"code":"AuthenticationTypeDisabled","message":"Key based authentication is disabled for this resource."}}'),
    "permission": (1, '{"error":{"code":"PermissionDenied","message":"The principal `aaaaaaaa-1111-2222-3333-444444444444` lacks the required data action `Microsoft.CognitiveServices/accounts/OpenAI/deployments/chat/completions/action` to perform `POST /openai/deployments/{deployment-id}/chat/completions` operation."}}'),
    "public_disabled": (1, '{"error":{"code":"403","message":"Public access is disabled. Please configure private endpoint."}}'),
    "private_endpoint": (1, '{"error":{"code":"403","message":"Traffic is not from an approved private endpoint."}}'),
    "deployment_404": (2, '{"error":{"code":"DeploymentNotFound","message":"The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again."}}'),
    "resource_404": (2, '{"error":{"code":"404","message":"Resource not found"}}'),
    "api_version": (3, '{"error":{"code":"BadRequest","message":"API version not supported"}}'),
    "auth_key": (3, '{"error":{"code":"BadRequest","message":"Please provide an authentication key."}}'),
    "throttled": (4, '{"error":{"code":"429","message":"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after 6 seconds."}}'),
    "apim": (0, '{"statusCode":401,"message":"Unauthorized. Access token is missing or invalid."}'),
    "plain": (5, "upstream connect error or disconnect/reset before headers"),
    # Bodies that carry a bearer token: the diagnosis must never repeat it.
    "token_in_audience": (0, '{"error":{"code":"401","message":"Unauthorized. Access token is missing, invalid, audience is incorrect (' + TOKEN[:150] + '), or have expired."}}'),
    "token_in_principal": (1, '{"error":{"code":"PermissionDenied","message":"The principal `' + TOKEN + '` lacks the required data action `x` to perform `POST` operation."}}'),
    "token_in_api_version": (3, '{"error":{"code":"InvalidApiVersion","message":"API version not supported for Bearer ' + TOKEN + '"}}'),
    "token_in_text": (0, "Authorization: Bearer " + TOKEN),
    "token_in_description": (0, '{"error":"invalid_token","error_description":"The token ' + TOKEN + ' is expired"}'),
}
claims = json.dumps(dict(BASE, aud="https://management.azure.com/"))
for name, (status, body) in samples.items():
    sel = bytes([status, 0, 0, 0, 1, 128, 0b0011_0111, 0])
    write("azure_error", name, sel, "", body, claims)
write("azure_error", "retry_after_date", bytes([4, 0, 0, 0, 0, 128, 0, 1]), "Thu, 02 Jan 2025 10:05:00 GMT", samples["throttled"][1], "")
write("azure_error", "retry_after_ms", bytes([4, 0, 0, 2, 0, 128, 0, 1]), "1500ms", "{}", "")
write("azure_error", "regional", bytes([0, 0, 0, 2, 0, 0, 1, 0]), "", samples["token_401"][1], claims)

# sse_usage: selector (bit 0: include_usage injected, so the usage-only chunk is hidden; bits 1-2:
# content type spelling), chunk lengths (each byte b: b - 1 bytes), stream.
# json_usage: the same, for a JSON answer (bits 3-7 all set: after 1 MiB of whitespace).
def event(obj, name=None):
    head = f"event: {name}\n" if name else ""
    return f"{head}data: {json.dumps(obj, separators=(',', ':'))}\n\n"

def chunk(content, first=False, last=False):
    delta = {"content": content}
    if first:
        delta["role"] = "assistant"
    return {"choices": [{"delta": delta, "finish_reason": "stop" if last else None, "index": 0, "logprobs": None}],
            "created": NOW, "id": "chatcmpl-1", "model": "gpt-4o", "object": "chat.completion.chunk", "system_fingerprint": "fp_1"}

USAGE = {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14, "prompt_tokens_details": {"cached_tokens": 2}}
chat_stream = event(chunk("Hello", first=True)) + event(chunk(" world, how are you", last=True))
usage_chunk = event({"choices": [], "created": NOW, "id": "chatcmpl-1", "model": "gpt-4o", "object": "chat.completion.chunk", "usage": USAGE})
done = "data: [DONE]\n\n"
resp_usage = {"input_tokens": 3, "output_tokens": 1, "total_tokens": 4, "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}
responses_stream = (event({"type": "response.created", "sequence_number": 0, "response": {"id": "resp_1", "status": "in_progress", "usage": None}}, "response.created")
    + event({"type": "response.output_text.delta", "sequence_number": 1, "item_id": "msg_1", "delta": "Hi"}, "response.output_text.delta")
    + event({"type": "response.completed", "sequence_number": 2, "response": {"id": "resp_1", "status": "completed", "usage": resp_usage}}, "response.completed"))
completion_stream = event({"choices": [{"text": "Hi there", "index": 0, "finish_reason": None}], "object": "text_completion"}) + done
for name, sel, splits, stream in [
    ("chat_hidden", 1, bytes([2, 6, 14, 255]), chat_stream + usage_chunk + done),
    ("chat_hidden_crlf", 3, bytes([8]), (chat_stream + usage_chunk + done).replace("\n", "\r\n")),
    ("chat_asked_for_usage", 0, bytes([1 + 7]), chat_stream + usage_chunk + done),
    ("chat_no_usage", 1, b"", chat_stream + done),
    ("chat_cut_in_usage", 1, bytes([30]), chat_stream + usage_chunk[:40]),
    ("chat_usage_no_blank", 5, bytes([1 + 1, 1 + 3]), chat_stream + usage_chunk.rstrip("\n")),
    ("responses", 1, bytes([17]), responses_stream),
    ("completions", 6, bytes([1]), completion_stream),
    ("comments_and_ids", 1, bytes([5]), ": keep-alive\n\nid: 7\nretry: 100\n" + usage_chunk + "data:" + json.dumps({"choices": [], "usage": None}) + "\n\n"),
    ("malformed_usage", 1, bytes([100]), event({"choices": [], "usage": {"prompt_tokens": "ten"}}) + event({"choices": [], "usage": {"total_tokens": -1}})),
    ("big_numbers", 0, b"", event({"choices": [], "usage": {"prompt_tokens": 18446744073709551615, "completion_tokens": 1}})),
]:
    write("sse_usage", name, bytes([sel]), splits, stream)

chat_json = {"choices": [{"finish_reason": "stop", "index": 0, "message": {"content": "Hello", "role": "assistant"}}],
             "id": "chatcmpl-1", "model": "gpt-4o", "object": "chat.completion",
             "usage": dict(USAGE, completion_tokens_details={"reasoning_tokens": 1})}
for name, sel, splits, body in [
    ("chat", 0, bytes([9]), json.dumps(chat_json)),
    ("embeddings", 2, b"", json.dumps({"data": [{"embedding": [0.1, -0.2], "index": 0}], "usage": {"prompt_tokens": 4, "total_tokens": 4}})),
    ("responses", 4, bytes([3, 200]), json.dumps({"id": "resp_1", "output": [], "usage": resp_usage})),
    ("no_usage", 1, b"", json.dumps({"id": 1})),
    ("null_usage", 0, b"", json.dumps({"usage": None})),
    ("malformed", 0, b"", json.dumps({"usage": {"prompt_tokens": "ten"}})),
    ("negative", 0, b"", json.dumps({"usage": {"total_tokens": -1}})),
    ("overflow", 0, b"", json.dumps({"usage": {"prompt_tokens": 18446744073709551615, "completion_tokens": 1}})),
    ("array", 0, b"", json.dumps([{"usage": {"total_tokens": 1}}])),
    ("html", 0, b"", "<html><body>502 Bad Gateway</body></html>"),
    ("cut", 0, bytes([5]), json.dumps(chat_json)[:50]),
    ("too_large", 0xf8, b"", json.dumps(chat_json)),
    # The byte-level walk's edges: escapes, surrogate pairs, exponents, long numbers, nesting.
    ("escapes", 0, b"", json.dumps(dict(chat_json, choices=[{"message": {"content": "caf\u00e9 \U0001f600\n\t\"q\" \\ /"}}]))),
    ("raw_utf8", 0, b"", json.dumps(dict(chat_json, choices=[{"message": {"content": "caf\u00e9 \U0001f600"}}]), ensure_ascii=False)),
    ("lone_surrogate", 0, b"", '{"a":"\\ud83d","usage":{"prompt_tokens":3}}'),
    ("logprobs", 0, b"", json.dumps(dict(chat_json, logprobs={"content": [{"token": "Hi", "logprob": -0.000123456789012345678, "top": [1e-7, 2.5E+3]}]}))),
    ("long_integer", 0, b"", '{"a":123456789012345678901234567890,"usage":{"prompt_tokens":3}}'),
    ("nested", 0, b"", '{"a":' + "[" * 70 + "1" + "]" * 70 + ',"usage":{"prompt_tokens":3}}'),
    ("repeated_usage", 0, b"", '{ "usage" : null , "usage" : { "total_tokens" : 2 } }'),
]:
    write("json_usage", name, bytes([sel]), splits, body)
