//! The exposure class vocabulary: the kinds of sensitive data the response scan names and
//! the rules match (`exposed_classes`, `deny_classes`).

/// Kinds of sensitive data.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Class {
    Email,
    Phone,
    PaymentCard,
    Iban,
    NationalId,
    DateOfBirth,
    Geolocation,
    StreetAddress,
    PasswordHash,
    Secret,
    InternalIp,
}

impl Class {
    pub const ALL: [Class; 11] = [
        Class::Email,
        Class::Phone,
        Class::PaymentCard,
        Class::Iban,
        Class::NationalId,
        Class::DateOfBirth,
        Class::Geolocation,
        Class::StreetAddress,
        Class::PasswordHash,
        Class::Secret,
        Class::InternalIp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Email => "email",
            Class::Phone => "phone",
            Class::PaymentCard => "payment-card",
            Class::Iban => "iban",
            Class::NationalId => "national-id",
            Class::DateOfBirth => "date-of-birth",
            Class::Geolocation => "geolocation",
            Class::StreetAddress => "street-address",
            Class::PasswordHash => "password-hash",
            Class::Secret => "secret",
            Class::InternalIp => "internal-ip",
        }
    }

    pub fn from_name(s: &str) -> Option<Class> {
        Class::ALL.into_iter().find(|c| c.as_str() == s)
    }
}
