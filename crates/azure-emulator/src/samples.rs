//! Azure's own data-plane error bodies, word for word, so clients and diagnostics see what Azure sends.

use serde::{Deserialize, Serialize};

use crate::Cloud;

/// The API version named in texts when a request had none.
const DEFAULT_API_VERSION: &str = "2024-10-21";

/// An error answer Azure OpenAI / Azure AI services really give.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AzureSample {
    /// 401: the token is missing, invalid, expired or for another audience.
    AudienceIncorrect401,
    /// 401: an `api-key` that is not the resource's key.
    InvalidKey401,
    /// 401: an `api-key` sent to a resource with `disableLocalAuth`.
    KeyAuthDisabled401,
    /// 403: the principal lacks the RBAC data action.
    PermissionDenied403,
    /// 401: the principal has no access to the API at all.
    PermissionDenied401,
    /// 403: public network access is disabled.
    PublicAccessDisabled403,
    /// 403: the caller did not come through an approved private endpoint.
    NotPrivateEndpoint403,
    /// 404: no deployment of that name.
    DeploymentNotFound404,
    /// 404: no such path, or no `api-version`.
    ResourceNotFound404,
    /// 429: token rate limit exceeded.
    Throttled429,
    /// 400: a bearer token sent to a shared regional endpoint.
    RegionalEndpoint400,
    /// 400: an `api-version` Azure does not know.
    ApiVersionUnsupported400,
}

/// What a sample's text mentions. `SampleContext::default()` describes a chat completion on
/// the public cloud.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleContext {
    /// The audience the resource expects (in `AudienceIncorrect401`).
    pub audience: String,
    /// The caller's object id (in `PermissionDenied403`).
    pub principal_id: String,
    /// The RBAC data action the operation needs (in `PermissionDenied403`).
    pub data_action: String,
    /// The route template, e.g. `POST /openai/deployments/{deployment-id}/chat/completions`.
    pub operation: String,
    /// The operation id, e.g. `ChatCompletions_Create` (in `Throttled429`).
    pub operation_name: String,
    pub api_version: String,
    /// Seconds to wait (in `Throttled429`).
    pub retry_after_secs: u64,
}

/// The data-plane operations, for the texts that name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    Chat,
    Completions,
    Embeddings,
    Responses,
}

impl Default for SampleContext {
    fn default() -> Self {
        SampleContext::for_operation(Cloud::Public.cognitive_audience(), Operation::Chat)
    }
}

impl SampleContext {
    pub(crate) fn for_operation(audience: &str, op: Operation) -> Self {
        SampleContext {
            audience: audience.to_owned(),
            principal_id: "00000000-0000-0000-0000-000000000000".to_owned(),
            data_action: op.data_action().to_owned(),
            operation: op.route_template().to_owned(),
            operation_name: op.operation_name().to_owned(),
            api_version: DEFAULT_API_VERSION.to_owned(),
            retry_after_secs: 1,
        }
    }
}

impl Operation {
    fn data_action(self) -> &'static str {
        match self {
            Operation::Chat => {
                "Microsoft.CognitiveServices/accounts/OpenAI/deployments/chat/completions/action"
            }
            Operation::Completions => {
                "Microsoft.CognitiveServices/accounts/OpenAI/deployments/completions/action"
            }
            Operation::Embeddings => {
                "Microsoft.CognitiveServices/accounts/OpenAI/deployments/embeddings/action"
            }
            Operation::Responses => "Microsoft.CognitiveServices/accounts/OpenAI/responses/write",
        }
    }

    fn route_template(self) -> &'static str {
        match self {
            Operation::Chat => "POST /openai/deployments/{deployment-id}/chat/completions",
            Operation::Completions => "POST /openai/deployments/{deployment-id}/completions",
            Operation::Embeddings => "POST /openai/deployments/{deployment-id}/embeddings",
            Operation::Responses => "POST /openai/responses",
        }
    }

    fn operation_name(self) -> &'static str {
        match self {
            Operation::Chat => "ChatCompletions_Create",
            Operation::Completions => "Completions_Create",
            Operation::Embeddings => "Embeddings_Create",
            Operation::Responses => "Responses_Create",
        }
    }
}

impl AzureSample {
    pub const ALL: [AzureSample; 12] = [
        AzureSample::AudienceIncorrect401,
        AzureSample::InvalidKey401,
        AzureSample::KeyAuthDisabled401,
        AzureSample::PermissionDenied403,
        AzureSample::PermissionDenied401,
        AzureSample::PublicAccessDisabled403,
        AzureSample::NotPrivateEndpoint403,
        AzureSample::DeploymentNotFound404,
        AzureSample::ResourceNotFound404,
        AzureSample::Throttled429,
        AzureSample::RegionalEndpoint400,
        AzureSample::ApiVersionUnsupported400,
    ];

    /// The HTTP status Azure answers with.
    pub fn status(&self) -> u16 {
        match self {
            AzureSample::AudienceIncorrect401
            | AzureSample::InvalidKey401
            | AzureSample::KeyAuthDisabled401
            | AzureSample::PermissionDenied401 => 401,
            AzureSample::PermissionDenied403
            | AzureSample::PublicAccessDisabled403
            | AzureSample::NotPrivateEndpoint403 => 403,
            AzureSample::DeploymentNotFound404 | AzureSample::ResourceNotFound404 => 404,
            AzureSample::Throttled429 => 429,
            AzureSample::RegionalEndpoint400 | AzureSample::ApiVersionUnsupported400 => 400,
        }
    }

    /// The `error.code` Azure writes.
    pub fn code(&self) -> &'static str {
        match self {
            AzureSample::AudienceIncorrect401 | AzureSample::InvalidKey401 => "401",
            AzureSample::KeyAuthDisabled401 => "AuthenticationTypeDisabled",
            AzureSample::PermissionDenied403 | AzureSample::PermissionDenied401 => {
                "PermissionDenied"
            }
            AzureSample::PublicAccessDisabled403 | AzureSample::NotPrivateEndpoint403 => "403",
            AzureSample::DeploymentNotFound404 => "DeploymentNotFound",
            AzureSample::ResourceNotFound404 => "404",
            AzureSample::Throttled429 => "429",
            AzureSample::RegionalEndpoint400 | AzureSample::ApiVersionUnsupported400 => {
                "BadRequest"
            }
        }
    }

    /// The `error.message` Azure writes, filled in from `ctx`.
    pub fn message(&self, ctx: &SampleContext) -> String {
        match self {
            AzureSample::AudienceIncorrect401 => format!(
                "Unauthorized. Access token is missing, invalid, audience is incorrect ({}), or have expired.",
                ctx.audience.trim_end_matches('/')
            ),
            AzureSample::InvalidKey401 => "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.".to_owned(),
            AzureSample::KeyAuthDisabled401 => {
                "Key based authentication is disabled for this resource.".to_owned()
            }
            AzureSample::PermissionDenied403 => format!(
                "The principal `{}` lacks the required data action `{}` to perform `{}` operation.",
                ctx.principal_id, ctx.data_action, ctx.operation
            ),
            AzureSample::PermissionDenied401 => {
                "Principal does not have access to API/Operation.".to_owned()
            }
            AzureSample::PublicAccessDisabled403 => {
                "Public access is disabled. Please configure private endpoint.".to_owned()
            }
            AzureSample::NotPrivateEndpoint403 => {
                "Traffic is not from an approved private endpoint.".to_owned()
            }
            AzureSample::DeploymentNotFound404 => "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again.".to_owned(),
            AzureSample::ResourceNotFound404 => "Resource not found".to_owned(),
            AzureSample::Throttled429 => format!(
                "Requests to the {} Operation under Azure OpenAI API version {} have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after {} {}. Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit.",
                ctx.operation_name,
                ctx.api_version,
                ctx.retry_after_secs,
                if ctx.retry_after_secs == 1 { "second" } else { "seconds" }
            ),
            AzureSample::RegionalEndpoint400 => "Please provide an authentication key.".to_owned(),
            AzureSample::ApiVersionUnsupported400 => "API version not supported".to_owned(),
        }
    }

    /// The whole JSON body: `{"error":{"code":…,"message":…}}`.
    pub fn body(&self, ctx: &SampleContext) -> String {
        error_body(self.code(), &self.message(ctx))
    }
}

/// Azure's `{"error":{"code":…,"message":…}}`.
pub(crate) fn error_body(code: &str, message: &str) -> String {
    serde_json::json!({ "error": { "code": code, "message": message } }).to_string()
}

/// The body for a scripted bare status: Azure's shape with the status as the code.
pub(crate) fn status_body(status: u16) -> String {
    let message = match status {
        400 => "Bad request.",
        401 => "Unauthorized.",
        403 => "Forbidden.",
        404 => "Resource not found",
        408 => "The operation was timeout.",
        409 => "Conflict.",
        413 => "Request entity too large.",
        429 => "Too many requests. Please retry later.",
        500 => "The server had an error while processing your request. Sorry about that!",
        502 => "Bad gateway.",
        503 => "The service is temporarily unable to process your request. Please try again later.",
        504 => "The request timed out. Please try again later.",
        _ => "The emulator was scripted to fail this request.",
    };
    error_body(&status.to_string(), message)
}

/// OpenAI's answer to a body that is not JSON, as Azure relays it.
pub(crate) fn invalid_json_body() -> String {
    invalid_request_body(
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)",
        None,
        None,
    )
}

/// OpenAI's `invalid_request_error` shape, which Azure passes through for body validation.
pub(crate) fn invalid_request_body(
    message: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> String {
    serde_json::json!({
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": param,
            "code": code,
        }
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(sample: AzureSample, ctx: &SampleContext) -> serde_json::Value {
        serde_json::from_str(&sample.body(ctx)).unwrap()
    }

    #[test]
    fn audience_sample_names_the_expected_audience_without_trailing_slash() {
        let ctx = SampleContext {
            audience: "https://ai.azure.com/".into(),
            ..SampleContext::default()
        };
        assert_eq!(
            parsed(AzureSample::AudienceIncorrect401, &ctx),
            serde_json::json!({"error":{"code":"401","message":"Unauthorized. Access token is missing, invalid, audience is incorrect (https://ai.azure.com), or have expired."}})
        );
    }

    #[test]
    fn every_sample_is_azure_shaped_with_a_client_error_status() {
        let ctx = SampleContext::default();
        for s in AzureSample::ALL {
            let v = parsed(s, &ctx);
            assert_eq!(v["error"]["code"], s.code(), "{s:?}");
            assert!(!v["error"]["message"].as_str().unwrap().is_empty());
            assert!((400..500).contains(&s.status()));
        }
    }

    #[test]
    fn permission_denied_and_throttling_texts_are_filled_in() {
        let mut ctx = SampleContext::for_operation("a", Operation::Embeddings);
        ctx.principal_id = "oid-1".into();
        ctx.retry_after_secs = 7;
        ctx.api_version = "2024-06-01".into();
        assert_eq!(
            AzureSample::PermissionDenied403.message(&ctx),
            "The principal `oid-1` lacks the required data action `Microsoft.CognitiveServices/accounts/OpenAI/deployments/embeddings/action` to perform `POST /openai/deployments/{deployment-id}/embeddings` operation."
        );
        assert!(AzureSample::Throttled429.message(&ctx).starts_with(
            "Requests to the Embeddings_Create Operation under Azure OpenAI API version 2024-06-01 have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after 7 seconds."
        ));
    }

    #[test]
    fn bare_statuses_use_the_status_as_code() {
        let v: serde_json::Value = serde_json::from_str(&status_body(503)).unwrap();
        assert_eq!(v["error"]["code"], "503");
        let v: serde_json::Value = serde_json::from_str(&invalid_json_body()).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
}
