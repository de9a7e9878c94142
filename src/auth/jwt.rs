//! JWT tokens (`--auth-token jwt,pub-key=PATH,priv-key=PATH,sign-method=RS256,ttl=5m`),
//! as etcd's `auth/jwt.go`: the claims are the user name, the auth revision
//! at issue and an expiry; any member with the public key verifies a token
//! without asking anyone, and one issued before any later auth change is
//! answered "revision of auth store is old". A member given only the public
//! key verifies but cannot issue. Signing and verifying use the
//! `jsonwebtoken` crate on `ring` (the TLS stack's provider already).

use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// etcd's default JWT lifetime (`ttl=` option).
pub const DEFAULT_JWT_TTL: Duration = Duration::from_secs(300);

/// The parsed options of `--auth-token jwt,...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtOptions {
    pub sign_method: Algorithm,
    pub pub_key: Option<PathBuf>,
    pub priv_key: Option<PathBuf>,
    pub ttl: Duration,
}

/// `--auth-token`: the token provider.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TokenProvider {
    #[default]
    Simple,
    Jwt(JwtOptions),
}

/// Parse etcd's `--auth-token` value: `simple`, or `jwt` followed by
/// comma-separated `name=value` options.
pub fn parse_auth_token(flag: &str) -> Result<TokenProvider, String> {
    let mut parts = flag.split(',');
    match parts.next().unwrap_or_default() {
        "simple" if parts.clone().next().is_none() => Ok(TokenProvider::Simple),
        "simple" => Err("--auth-token simple takes no options".into()),
        "jwt" => {
            let (mut method, mut pub_key, mut priv_key, mut ttl) = (None, None, None, None);
            for opt in parts {
                let (k, v) = opt
                    .split_once('=')
                    .ok_or_else(|| format!("--auth-token option {opt:?} is not NAME=VALUE"))?;
                match k {
                    "sign-method" => method = Some(algorithm(v)?),
                    "pub-key" => pub_key = Some(PathBuf::from(v)),
                    "priv-key" => priv_key = Some(PathBuf::from(v)),
                    "ttl" => {
                        ttl = Some(crate::duration::parse_go_duration(v).map_err(|e| {
                            format!("--auth-token option ttl={v:?} is not a duration: {e}")
                        })?)
                    }
                    other => return Err(format!("--auth-token: unknown jwt option {other:?}")),
                }
            }
            let sign_method =
                method.ok_or("--auth-token jwt needs sign-method= (e.g. sign-method=RS256)")?;
            let hmac = matches!(
                sign_method,
                Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
            );
            if hmac && priv_key.is_none() {
                return Err("--auth-token jwt with an HS* sign-method needs priv-key= (the shared secret's file)".into());
            }
            if !hmac && pub_key.is_none() {
                return Err("--auth-token jwt needs pub-key= (the public key's PEM file)".into());
            }
            Ok(TokenProvider::Jwt(JwtOptions {
                sign_method,
                pub_key,
                priv_key,
                ttl: ttl.unwrap_or(DEFAULT_JWT_TTL),
            }))
        }
        other => Err(format!(
            "--auth-token must be \"simple\" or \"jwt,...\", not {other:?}"
        )),
    }
}

fn algorithm(v: &str) -> Result<Algorithm, String> {
    Ok(match v {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        other => {
            return Err(format!(
                "--auth-token: unsupported sign-method {other:?} (RS256/384/512, PS256/384/512, ES256/384, HS256/384/512)"
            ))
        }
    })
}

/// etcd's JWT claims.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    username: String,
    revision: u64,
    exp: u64,
}

/// Loaded JWT keys.
pub struct JwtKeys {
    alg: Algorithm,
    sign: Option<EncodingKey>,
    verify: DecodingKey,
    ttl: Duration,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field("alg", &self.alg)
            .field("can_sign", &self.sign.is_some())
            .finish()
    }
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

impl JwtKeys {
    /// Read the key files named in `opts`.
    pub fn load(opts: &JwtOptions) -> Result<Self, String> {
        let bad = |what: &str, e: jsonwebtoken::errors::Error| format!("{what}: {e}");
        let (sign, verify) = match opts.sign_method {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                let path = opts.priv_key.as_deref().ok_or("no priv-key")?;
                let secret = read(path)?;
                (
                    Some(EncodingKey::from_secret(&secret)),
                    DecodingKey::from_secret(&secret),
                )
            }
            alg => {
                let ec = matches!(alg, Algorithm::ES256 | Algorithm::ES384);
                let pub_path = opts.pub_key.as_deref().ok_or("no pub-key")?;
                let pem = read(pub_path)?;
                let verify = if ec {
                    DecodingKey::from_ec_pem(&pem)
                } else {
                    DecodingKey::from_rsa_pem(&pem)
                }
                .map_err(|e| bad(&format!("public key {}", pub_path.display()), e))?;
                let sign = match &opts.priv_key {
                    None => None,
                    Some(p) => {
                        let pem = read(p)?;
                        Some(
                            if ec {
                                EncodingKey::from_ec_pem(&pem)
                            } else {
                                EncodingKey::from_rsa_pem(&pem)
                            }
                            .map_err(|e| bad(&format!("private key {}", p.display()), e))?,
                        )
                    }
                };
                (sign, verify)
            }
        };
        let keys = Self {
            alg: opts.sign_method,
            sign,
            verify,
            ttl: opts.ttl,
        };
        // A private key that does not match the public one would issue
        // tokens no member accepts: refuse it at start, as etcd does.
        if keys.sign.is_some() {
            let probe = keys.sign_token("probe", 1, 1)?;
            if keys.verify_token(&probe, 1).is_none() {
                return Err("the public and private keys do not match".into());
            }
        }
        Ok(keys)
    }

    /// A token for `user` at auth revision `revision`, issued at `now_secs`
    /// (unix time).
    pub fn sign_token(&self, user: &str, revision: u64, now_secs: u64) -> Result<String, String> {
        let key = self
            .sign
            .as_ref()
            .ok_or("this member has no JWT private key (verify only)")?;
        let claims = Claims {
            username: user.to_string(),
            revision,
            exp: now_secs.saturating_add(self.ttl.as_secs()),
        };
        jsonwebtoken::encode(&Header::new(self.alg), &claims, key).map_err(|e| e.to_string())
    }

    /// The user and auth revision of a valid token not expired at
    /// `now_secs` (0: check the expiry against the system clock).
    pub fn verify_token(&self, token: &str, now_secs: u64) -> Option<(String, u64)> {
        let mut v = Validation::new(self.alg);
        v.leeway = 0;
        v.validate_exp = now_secs == 0;
        v.set_required_spec_claims(&["exp"]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.verify, &v).ok()?;
        if now_secs != 0 && data.claims.exp <= now_secs {
            return None;
        }
        Some((data.claims.username, data.claims.revision))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_syntax() {
        assert_eq!(parse_auth_token("simple"), Ok(TokenProvider::Simple));
        let TokenProvider::Jwt(o) =
            parse_auth_token("jwt,pub-key=a.pub,priv-key=a.key,sign-method=ES256,ttl=10m").unwrap()
        else {
            panic!("not jwt")
        };
        assert_eq!(o.sign_method, Algorithm::ES256);
        assert_eq!(o.ttl, Duration::from_secs(600));
        assert!(parse_auth_token("jwt,pub-key=a")
            .unwrap_err()
            .contains("sign-method"));
        assert!(parse_auth_token("jwt,sign-method=RS256")
            .unwrap_err()
            .contains("pub-key"));
        assert!(parse_auth_token("jwt,sign-method=XX1").is_err());
        assert!(parse_auth_token("jwt,nonsense").is_err());
        assert!(parse_auth_token("opaque").is_err());
    }

    #[test]
    fn hmac_tokens_roundtrip_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"0123456789abcdef0123456789abcdef").unwrap();
        let opts = JwtOptions {
            sign_method: Algorithm::HS256,
            pub_key: None,
            priv_key: Some(secret),
            ttl: Duration::from_secs(10),
        };
        let keys = JwtKeys::load(&opts).unwrap();
        let t = keys.sign_token("alice", 7, 1_000).unwrap();
        assert_eq!(keys.verify_token(&t, 1_005), Some(("alice".into(), 7)));
        assert_eq!(keys.verify_token(&t, 1_010), None);
        assert_eq!(keys.verify_token("x.y.z", 1_005), None);
    }
}
