//! What an alert is about and how serious it is: the category and severity vocabulary of
//! rules, alerts, the actor registry's risk scores and webhook filters.

/// Alert categories (INTERFACE.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    Bot,
    Scraping,
    TokenForgery,
    TokenReplay,
    TokenBinding,
    CredentialStuffing,
    Bola,
    DataExposure,
    ProtocolAnomaly,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Bot => "bot",
            Category::Scraping => "scraping",
            Category::TokenForgery => "token-forgery",
            Category::TokenReplay => "token-replay",
            Category::TokenBinding => "token-binding",
            Category::CredentialStuffing => "credential-stuffing",
            Category::Bola => "bola",
            Category::DataExposure => "data-exposure",
            Category::ProtocolAnomaly => "protocol-anomaly",
        }
    }
}

/// Alert severities, in increasing order (INTERFACE.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}
