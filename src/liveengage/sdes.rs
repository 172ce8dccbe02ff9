//! LiveEngage engagement attributes (`lp_sdes`): customer info (`ctmrinfo`) and personal
//! info (`personal`), the only two types LiveEngage accepts for authenticated consumers.
//! Parsed into typed shapes when an admin writes them, so a malformed attribute is refused
//! at the admin's door, not discovered by an agent.

use serde::{Deserialize, Serialize};
use serde_json::Value;

const MAX_TEXT: usize = 256;
const MAX_CONTACTS: usize = 10;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Date {
    pub day: u8,
    pub month: u8,
    pub year: u16,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CustomerInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cstatus: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ctype: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub social_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imei: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub company_size: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub company_branch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_payment_date: Option<Date>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registration_date: Option<Date>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login_status: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PhoneType {
    Home,
    Mobile,
    Work,
    Fax,
    Main,
    HomeFax,
    WorkFax,
    Pager,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Gender {
    Male,
    Female,
    Other,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Address {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Contact {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone_type: Option<PhoneType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<Address>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Age {
    pub age: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub year: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub month: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day: Option<u8>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonalInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firstname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lastname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age: Option<Age>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contacts: Option<Vec<Contact>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gender: Option<Gender>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
}

/// One engagement attribute, as it appears in the `lp_sdes` array.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Sde {
    #[serde(rename = "ctmrinfo")]
    CustomerInfo { info: CustomerInfo },
    #[serde(rename = "personal")]
    Personal { personal: PersonalInfo },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct SdesError(pub String);

fn err(s: impl Into<String>) -> SdesError {
    SdesError(s.into())
}

fn text(field: &str, v: &Option<String>) -> Result<(), SdesError> {
    if let Some(s) = v {
        if s.chars().count() > MAX_TEXT || s.chars().any(char::is_control) {
            return Err(err(format!("{field} must be at most {MAX_TEXT} characters with no control characters")));
        }
    }
    Ok(())
}

fn date(field: &str, d: &Option<Date>) -> Result<(), SdesError> {
    if let Some(d) = d {
        if !(1..=31).contains(&d.day) || !(1..=12).contains(&d.month) || !(1900..=2200).contains(&d.year) {
            return Err(err(format!("{field} must be {{\"day\": 1-31, \"month\": 1-12, \"year\": 1900-2200}}")));
        }
    }
    Ok(())
}

/// `en-US` / `en_US`: ISO 639-1 language, ISO 3166-1 alpha-2 country.
fn language_tag(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 5
        && b[0].is_ascii_lowercase()
        && b[1].is_ascii_lowercase()
        && (b[2] == b'-' || b[2] == b'_')
        && b[3].is_ascii_uppercase()
        && b[4].is_ascii_uppercase()
}

fn check_customer(i: &CustomerInfo) -> Result<(), SdesError> {
    for (f, v) in [
        ("ctmrinfo.cstatus", &i.cstatus),
        ("ctmrinfo.ctype", &i.ctype),
        ("ctmrinfo.customerId", &i.customer_id),
        ("ctmrinfo.currency", &i.currency),
        ("ctmrinfo.socialId", &i.social_id),
        ("ctmrinfo.imei", &i.imei),
        ("ctmrinfo.userName", &i.user_name),
        ("ctmrinfo.companyBranch", &i.company_branch),
        ("ctmrinfo.accountName", &i.account_name),
        ("ctmrinfo.role", &i.role),
    ] {
        text(f, v)?;
    }
    if let Some(c) = &i.currency {
        if c.len() != 3 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(err("ctmrinfo.currency must be an ISO 4217 code such as USD"));
        }
    }
    if i.balance.is_some_and(|b| !b.is_finite()) {
        return Err(err("ctmrinfo.balance must be a finite number"));
    }
    if i.company_size.is_some_and(|n| n < 0) {
        return Err(err("ctmrinfo.companySize must be a non-negative integer"));
    }
    date("ctmrinfo.lastPaymentDate", &i.last_payment_date)?;
    date("ctmrinfo.registrationDate", &i.registration_date)?;
    Ok(())
}

fn check_personal(p: &PersonalInfo) -> Result<(), SdesError> {
    text("personal.firstname", &p.firstname)?;
    text("personal.lastname", &p.lastname)?;
    text("personal.company", &p.company)?;
    if let Some(l) = &p.language {
        if !language_tag(l) {
            return Err(err(format!("personal.language {l:?} must look like en-US (language-COUNTRY)")));
        }
    }
    if let Some(a) = &p.age {
        if a.age > 150
            || a.month.is_some_and(|m| !(1..=12).contains(&m))
            || a.day.is_some_and(|d| !(1..=31).contains(&d))
            || a.year.is_some_and(|y| !(1850..=2200).contains(&y))
        {
            return Err(err("personal.age must be {\"age\": 0-150, \"year\", \"month\": 1-12, \"day\": 1-31}"));
        }
    }
    if let Some(contacts) = &p.contacts {
        if contacts.len() > MAX_CONTACTS {
            return Err(err(format!("personal.contacts may hold at most {MAX_CONTACTS} entries")));
        }
        for c in contacts {
            text("personal.contacts.email", &c.email)?;
            text("personal.contacts.phone", &c.phone)?;
            if let Some(e) = &c.email {
                if !e.split_once('@').is_some_and(|(l, d)| !l.is_empty() && d.contains('.')) {
                    return Err(err(format!("personal.contacts.email {e:?} is not an email address")));
                }
            }
            if let Some(a) = &c.address {
                text("personal.contacts.address.country", &a.country)?;
                text("personal.contacts.address.region", &a.region)?;
            }
        }
    }
    Ok(())
}

/// Parses and checks an `lp_sdes` document: a JSON array of at most one `ctmrinfo` and one
/// `personal` object. Returns it in canonical form.
pub fn parse(v: &Value) -> Result<Vec<Sde>, SdesError> {
    let Value::Array(items) = v else {
        return Err(err(
            "lp_sdes must be a JSON array of {\"type\": \"ctmrinfo\", ...} and {\"type\": \"personal\", ...} objects",
        ));
    };
    let mut out: Vec<Sde> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let ty = item.get("type").and_then(Value::as_str).unwrap_or("");
        match ty {
            "ctmrinfo" => {
                if let Some(info) = item.get("info") {
                    for field in ["storeZipCode", "storeNumber"] {
                        if info.get(field).is_some() {
                            return Err(err(format!(
                                "ctmrinfo.{field} is not supported by LiveEngage for authenticated consumers; remove it"
                            )));
                        }
                    }
                }
            }
            "personal" => {}
            "" => return Err(err(format!("item {i} has no \"type\""))),
            other => {
                return Err(err(format!(
                    "type {other:?} is not supported by LiveEngage for authenticated consumers; only ctmrinfo and personal are"
                )))
            }
        }
        let sde: Sde = serde_json::from_value(item.clone()).map_err(|e| err(format!("{ty}: {e}")))?;
        match &sde {
            Sde::CustomerInfo { info } => check_customer(info)?,
            Sde::Personal { personal } => check_personal(personal)?,
        }
        if out.iter().any(|s| std::mem::discriminant(s) == std::mem::discriminant(&sde)) {
            return Err(err(format!("{ty} appears more than once; LiveEngage replaces the whole object, so give one")));
        }
        out.push(sde);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn full() -> Value {
        json!([
            {"type": "ctmrinfo", "info": {
                "cstatus": "cancelled", "ctype": "vip", "customerId": "138766AC", "balance": -400.99, "currency": "USD",
                "socialId": "11256324780", "imei": "3543546543545688", "userName": "user000", "companySize": 500,
                "companyBranch": "East Village", "accountName": "bank corp", "role": "broker",
                "lastPaymentDate": {"day": 15, "month": 10, "year": 2014}, "registrationDate": {"day": 23, "month": 5, "year": 2013},
                "loginStatus": 0}},
            {"type": "personal", "personal": {
                "firstname": "John", "lastname": "Doe", "age": {"age": 34, "year": 1980, "month": 4, "day": 15},
                "contacts": [{"email": "john@doe.com", "phone": "+1 212-788-8877", "phoneType": "MOBILE", "address": {"country": "US", "region": "NY"}}],
                "gender": "MALE", "company": "Microsoft Ltd.", "language": "en-US"}}
        ])
    }

    #[test]
    fn every_documented_field_round_trips() {
        let v = full();
        let parsed = parse(&v).unwrap();
        assert_eq!(serde_json::to_value(&parsed).unwrap(), v);
    }

    #[test]
    fn bad_shapes_are_refused_with_the_field_named() {
        let cases = [
            (json!({"type": "ctmrinfo"}), "array"),
            (json!([{"type": "cart", "total": 1}]), "cart"),
            (json!([{"type": "ctmrinfo", "info": {"storeZipCode": "20505"}}]), "storeZipCode"),
            (json!([{"type": "ctmrinfo", "info": {"storeNumber": "1"}}]), "storeNumber"),
            (json!([{"type": "ctmrinfo", "info": {"balance": "lots"}}]), "ctmrinfo"),
            (json!([{"type": "ctmrinfo", "info": {"companySize": 1.5}}]), "ctmrinfo"),
            (
                json!([{"type": "ctmrinfo", "info": {"lastPaymentDate": {"day": 32, "month": 1, "year": 2020}}}]),
                "lastPaymentDate",
            ),
            (json!([{"type": "ctmrinfo", "info": {"registrationDate": "2020-01-01"}}]), "ctmrinfo"),
            (json!([{"type": "ctmrinfo", "info": {"unknownField": 1}}]), "unknownField"),
            (json!([{"type": "personal", "personal": {"gender": "male"}}]), "personal"),
            (json!([{"type": "personal", "personal": {"gender": 1}}]), "personal"),
            (json!([{"type": "personal", "personal": {"contacts": [{"phoneType": "CELL"}]}}]), "personal"),
            (json!([{"type": "personal", "personal": {"language": "english"}}]), "language"),
            (json!([{"type": "personal", "personal": {}}, {"type": "personal", "personal": {}}]), "more than once"),
            (json!([{"info": {}}]), "no \"type\""),
        ];
        for (v, needle) in cases {
            let e = parse(&v).unwrap_err().0;
            assert!(e.contains(needle), "{v}: {e}");
        }
    }
}
