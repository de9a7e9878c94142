//! `raftcd escrow recover`: the signer of every independent test vector
//! (tests/data/escrow_vectors.json, made with Python eth-account), printed
//! as an EIP-55 address; bad input is a non-zero exit that says what is
//! wrong.

use std::process::Command;

use crate::common::raftcd_bin;

fn recover(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(raftcd_bin())
        .args(["escrow", "recover"])
        .args(args)
        .output()
        .expect("run raftcd escrow recover");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

fn vectors() -> Vec<serde_json::Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/escrow_vectors.json"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    json["vectors"].as_array().unwrap().clone()
}

fn args(v: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for (flag, key) in [
        ("--mpe-contract", "mpe_contract"),
        ("--channel-id", "channel_id"),
        ("--nonce", "nonce"),
        ("--amount", "amount"),
        ("--signature", "signature"),
    ] {
        out.push(flag.to_string());
        out.push(v[key].as_str().unwrap().to_string());
    }
    out
}

#[test]
fn recover_prints_the_signer_of_every_vector() {
    for v in vectors() {
        let a = args(&v);
        let (code, stdout, stderr) = recover(&a.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(code, Some(0), "{}: {stderr}", v["name"]);
        assert_eq!(stdout, v["signer"].as_str().unwrap(), "{}", v["name"]);
    }
}

#[test]
fn recover_says_what_is_wrong_with_bad_input() {
    let v = &vectors()[0];
    let with = |flag: &str, value: &str| {
        let mut a = args(v);
        let i = a.iter().position(|x| x == flag).unwrap();
        a[i + 1] = value.to_string();
        recover(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let (code, _, err) = with("--signature", "0xabcd");
    assert_eq!(code, Some(1));
    assert_eq!(
        err,
        "raftcd: error: escrow recover: signature: 2 bytes; a signature is 65 (r, s, v)"
    );
    let mut sig = v["signature"].as_str().unwrap().to_string();
    sig.replace_range(sig.len() - 2.., "05");
    let (code, _, err) = with("--signature", &sig);
    assert_eq!(code, Some(1));
    assert!(err.contains("v is 5; it must be 0, 1, 27 or 28"), "{err}");
    let (code, _, err) = with("--signature", "not-hex");
    assert_eq!(code, Some(1));
    assert!(err.contains("signature:"), "{err}");
    let too_big = "115792089237316195423570985008687907853269984665640564039457584007913129639936";
    let (code, _, err) = with("--amount", too_big);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("--amount") && err.contains("above 2^256-1"),
        "{err}"
    );
    let (code, _, err) = with("--mpe-contract", "0x1234");
    assert_eq!(code, Some(1));
    assert!(
        err.contains("--mpe-contract") && err.contains("an address is 20"),
        "{err}"
    );
    // A tampered amount recovers some other address: not the signer.
    let amount = v["amount"].as_str().unwrap().parse::<u128>().unwrap() + 1;
    let (code, stdout, _) = with("--amount", &amount.to_string());
    assert_eq!(code, Some(0));
    assert_ne!(stdout, v["signer"].as_str().unwrap());
}
