use super::*;

/// One DER element: tag, length (short or long form), content.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let len = content.len();
    let mut out = vec![tag];
    match len {
        0..=0x7f => out.push(len as u8),
        0x80..=0xff => out.extend([0x81, len as u8]),
        _ => out.extend([0x82, (len >> 8) as u8, len as u8]),
    }
    out.extend_from_slice(content);
    out
}

/// A certificate's outer layers: a `tbs_len`-byte to-be-signed part, the signature algorithm
/// `oid` (with NULL parameters), a signature.
fn cert(oid: &[u8], tbs_len: usize) -> Vec<u8> {
    let algorithm = [tlv(0x06, oid), tlv(0x05, &[])].concat();
    let body = [tlv(0x30, &vec![7; tbs_len]), tlv(0x30, &algorithm), tlv(0x03, &[0, 1, 2, 3])].concat();
    tlv(0x30, &body)
}

const RSA: [u8; 8] = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
const ECDSA: [u8; 6] = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04];

fn rsa(last: u8) -> Vec<u8> {
    [&RSA[..], &[last]].concat()
}

fn ecdsa(tail: &[u8]) -> Vec<u8> {
    [&ECDSA[..], tail].concat()
}

#[test]
fn the_hash_is_the_signatures_with_sha256_for_md5_and_sha1() {
    let cases: [(Vec<u8>, usize); 9] = [
        (rsa(4), 32),         // md5WithRSAEncryption
        (rsa(5), 32),         // sha1WithRSAEncryption
        (rsa(11), 32),        // sha256WithRSAEncryption
        (rsa(12), 48),        // sha384WithRSAEncryption
        (rsa(13), 64),        // sha512WithRSAEncryption
        (ecdsa(&[1]), 32),    // ecdsa-with-SHA1
        (ecdsa(&[3, 2]), 32), // ecdsa-with-SHA256
        (ecdsa(&[3, 3]), 48), // ecdsa-with-SHA384
        (ecdsa(&[3, 4]), 64), // ecdsa-with-SHA512
    ];
    for (oid, len) in cases {
        let der = cert(&oid, 40);
        let hash = end_point(&der).unwrap_or_else(|| panic!("{oid:x?}"));
        assert_eq!(hash.len(), len, "{oid:x?}");
        let algorithm = match len {
            32 => &SHA256,
            48 => &SHA384,
            _ => &SHA512,
        };
        assert_eq!(hash, ring::digest::digest(algorithm, &der).as_ref(), "the whole certificate is hashed");
    }
}

#[test]
fn algorithms_that_name_no_hash_offer_no_binding() {
    let none: [Vec<u8>; 11] = [
        rsa(10),                     // RSASSA-PSS: the hash is in its parameters
        rsa(1),                      // rsaEncryption, a key type and no signature
        vec![0x2b, 0x65, 0x70],      // Ed25519
        ecdsa(&[3, 1]),              // ecdsa-with-SHA224
        ecdsa(&[3]),                 // cut short
        [&RSA[1..], &[11]].concat(), // the arc cut short
        [&ECDSA[1..], &[3, 2]].concat(),
        // The right last arcs under the other family's prefix.
        ecdsa(&[12]),
        ecdsa(&[13]),
        [&RSA[..], &[3, 3]].concat(),
        [&RSA[..], &[3, 4]].concat(),
    ];
    for oid in none {
        assert_eq!(end_point(&cert(&oid, 40)), None, "{oid:x?}");
    }
}

#[test]
fn long_lengths_are_read() {
    // 300 bytes of to-be-signed: two-byte lengths there and on the certificate.
    assert_eq!(end_point(&cert(&rsa(11), 300)).map(|h| h.len()), Some(32));
    // 200 bytes: one-byte long form.
    assert_eq!(end_point(&cert(&ecdsa(&[3, 3]), 200)).map(|h| h.len()), Some(48));
    assert_eq!(
        element(&[0x04, 0x82, 0x01, 0x00].iter().copied().chain([9; 256]).collect::<Vec<_>>(), 0x04).map(|e| e.0.len()),
        Some(256)
    );
}

#[test]
fn what_does_not_parse_offers_no_binding() {
    let good = cert(&rsa(11), 40);
    assert!(end_point(&good).is_some());
    // Cut anywhere, the certificate does not parse.
    for cut in [0, 1, 2, 10, 44, 47, good.len() - 1] {
        assert_eq!(end_point(&good[..cut]), None, "cut at {cut}");
    }
    // Tags: the certificate, its to-be-signed part, its algorithm, the OID.
    for at in [0, 2, 44, 46] {
        let mut bad = good.clone();
        bad[at] ^= 0x01;
        assert_eq!(end_point(&bad), None, "tag at {at} changed");
    }
}

#[test]
fn element_lengths_follow_der() {
    // Short form, exact fit, and what follows.
    assert_eq!(element(&[0x30, 0x02, 1, 2, 9], 0x30), Some((&[1u8, 2][..], &[9u8][..])));
    assert_eq!(element(&[0x30, 0x00], 0x30), Some((&[][..], &[][..])));
    // Long form with its length bytes just there.
    assert_eq!(element(&[0x30, 0x81, 0x00], 0x30), Some((&[][..], &[][..])));
    assert_eq!(element(&[0x30, 0x81, 0x01, 5], 0x30), Some((&[5u8][..], &[][..])));
    // 0x80 (indefinite), more than four length bytes, length bytes missing, content short.
    let long = [0x30, 0x80].iter().copied().chain([0; 200]).collect::<Vec<u8>>();
    assert_eq!(element(&long, 0x30), None);
    assert_eq!(element(&[0x30, 0x85, 0, 0, 0, 0, 1, 5], 0x30), None);
    assert_eq!(element(&[0x30, 0x82, 0x01], 0x30), None);
    assert_eq!(element(&[0x30, 0x03, 1, 2], 0x30), None);
    assert_eq!(element(&[0x30], 0x30), None);
    assert_eq!(element(&[0x31, 0x00], 0x30), None);
    // Four length bytes are read big-endian.
    let mut four = vec![0x04, 0x84, 0, 0, 1, 2];
    four.extend([3; 258]);
    assert_eq!(element(&four, 0x04).map(|e| e.0.len()), Some(258));
}
