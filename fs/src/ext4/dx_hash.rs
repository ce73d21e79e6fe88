//! The name hashes of htree directories (legacy, half-MD4 and TEA, each in the signed and
//! unsigned-char flavours the superblock selects), as ext4 defines them: a directory's
//! names must land in the leaf the kernel would look in.

/// `s_def_hash_version` / dx_root hash versions.
pub const LEGACY: u8 = 0;
pub const HALF_MD4: u8 = 1;
pub const TEA: u8 = 2;
/// Added to the version when the superblock says chars are unsigned.
pub const UNSIGNED: u8 = 3;

const DEFAULT_SEED: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
/// The end-of-directory marker a major hash must never equal.
const EOF_32: u32 = 0x7fff_ffff;

fn byte(c: u8, unsigned: bool) -> u32 {
    if unsigned {
        c as u32
    } else {
        c as i8 as i32 as u32
    }
}

/// Packs up to `num * 4` bytes of `msg` into words, padded with the length.
fn to_words(msg: &[u8], num: usize, unsigned: bool) -> [u32; 8] {
    let len = msg.len() as u32;
    let mut pad = len | (len << 8);
    pad |= pad << 16;
    let mut out = [pad; 8];
    let mut val = pad;
    let mut w = 0;
    let take = msg.len().min(num * 4);
    for (i, &c) in msg[..take].iter().enumerate() {
        val = byte(c, unsigned).wrapping_add(val << 8);
        if i % 4 == 3 {
            out[w] = val;
            w += 1;
            val = pad;
        }
    }
    if w < num {
        out[w] = val;
    }
    out
}

fn half_md4(buf: &mut [u32; 4], x: &[u32; 8]) {
    let f = |x: u32, y: u32, z: u32| z ^ (x & (y ^ z));
    let g = |x: u32, y: u32, z: u32| (x & y).wrapping_add((x ^ y) & z);
    let h = |x: u32, y: u32, z: u32| x ^ y ^ z;
    let [mut a, mut b, mut c, mut d] = *buf;
    macro_rules! round {
        ($fun:expr, $a:ident, $b:ident, $c:ident, $d:ident, $k:expr, $s:expr) => {
            $a = $a
                .wrapping_add($fun($b, $c, $d))
                .wrapping_add($k)
                .rotate_left($s)
        };
    }
    const K2: u32 = 0o13240474631;
    const K3: u32 = 0o15666365641;
    for (i, s) in [3, 7, 11, 19, 3, 7, 11, 19].into_iter().enumerate() {
        match i % 4 {
            0 => round!(f, a, b, c, d, x[i], s),
            1 => round!(f, d, a, b, c, x[i], s),
            2 => round!(f, c, d, a, b, x[i], s),
            _ => round!(f, b, c, d, a, x[i], s),
        }
    }
    for (n, (i, s)) in [
        (1, 3),
        (3, 5),
        (5, 9),
        (7, 13),
        (0, 3),
        (2, 5),
        (4, 9),
        (6, 13),
    ]
    .into_iter()
    .enumerate()
    {
        let k = x[i].wrapping_add(K2);
        match n % 4 {
            0 => round!(g, a, b, c, d, k, s),
            1 => round!(g, d, a, b, c, k, s),
            2 => round!(g, c, d, a, b, k, s),
            _ => round!(g, b, c, d, a, k, s),
        }
    }
    for (n, (i, s)) in [
        (3, 3),
        (7, 9),
        (2, 11),
        (6, 15),
        (1, 3),
        (5, 9),
        (0, 11),
        (4, 15),
    ]
    .into_iter()
    .enumerate()
    {
        let k = x[i].wrapping_add(K3);
        match n % 4 {
            0 => round!(h, a, b, c, d, k, s),
            1 => round!(h, d, a, b, c, k, s),
            2 => round!(h, c, d, a, b, k, s),
            _ => round!(h, b, c, d, a, k, s),
        }
    }
    buf[0] = buf[0].wrapping_add(a);
    buf[1] = buf[1].wrapping_add(b);
    buf[2] = buf[2].wrapping_add(c);
    buf[3] = buf[3].wrapping_add(d);
}

fn tea(buf: &mut [u32; 4], x: &[u32; 8]) {
    const DELTA: u32 = 0x9E37_79B9;
    let (mut b0, mut b1) = (buf[0], buf[1]);
    let (a, b, c, d) = (x[0], x[1], x[2], x[3]);
    let mut sum = 0u32;
    for _ in 0..16 {
        sum = sum.wrapping_add(DELTA);
        b0 = b0.wrapping_add(
            (b1 << 4).wrapping_add(a) ^ b1.wrapping_add(sum) ^ (b1 >> 5).wrapping_add(b),
        );
        b1 = b1.wrapping_add(
            (b0 << 4).wrapping_add(c) ^ b0.wrapping_add(sum) ^ (b0 >> 5).wrapping_add(d),
        );
    }
    buf[0] = buf[0].wrapping_add(b0);
    buf[1] = buf[1].wrapping_add(b1);
}

fn legacy(name: &[u8], unsigned: bool) -> u32 {
    let (mut h0, mut h1) = (0x12a3_fe2du32, 0x37ab_e8f9u32);
    for &c in name {
        let mut h = h1.wrapping_add(h0 ^ byte(c, unsigned).wrapping_mul(7_152_373));
        if h & 0x8000_0000 != 0 {
            h = h.wrapping_sub(0x7fff_ffff);
        }
        h1 = h0;
        h0 = h;
    }
    h0 << 1
}

/// The major hash of `name` (low bit clear), or None for an unknown version.
pub fn hash(name: &[u8], version: u8, seed: [u32; 4]) -> Option<u32> {
    let unsigned = version >= UNSIGNED;
    let v = if unsigned {
        version - UNSIGNED
    } else {
        version
    };
    let mut buf = if seed.iter().all(|&s| s == 0) {
        DEFAULT_SEED
    } else {
        seed
    };
    let h = match v {
        LEGACY => legacy(name, unsigned),
        HALF_MD4 => {
            let mut p = name;
            loop {
                half_md4(&mut buf, &to_words(p, 8, unsigned));
                if p.len() <= 32 {
                    break;
                }
                p = &p[32..];
            }
            buf[1]
        }
        TEA => {
            let mut p = name;
            loop {
                tea(&mut buf, &to_words(p, 4, unsigned));
                if p.len() <= 16 {
                    break;
                }
                p = &p[16..];
            }
            buf[0]
        }
        _ => return None,
    };
    let h = h & !1;
    Some(if h == EOF_32 << 1 {
        (EOF_32 - 1) << 1
    } else {
        h
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_chain_blocks() {
        let a = hash(&[b'a'; 40], HALF_MD4, [0; 4]).unwrap();
        let b = hash(&[b'a'; 41], HALF_MD4, [0; 4]).unwrap();
        assert_ne!(a, b);
        assert_eq!(a & 1, 0);
        assert!(hash(b"x", 9, [0; 4]).is_none());
    }

    /// Against `debugfs dx_hash` for every version, short and long names, bytes above
    /// 0x7f (where signed and unsigned differ), the default and an explicit seed.
    #[test]
    fn agrees_with_debugfs() {
        use std::process::Command;
        let ok = Command::new("sh")
            .args(["-c", "command -v debugfs"])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(
                std::env::var_os("CI").is_none(),
                "debugfs is required when CI is set"
            );
            return;
        }
        let mut names: Vec<Vec<u8>> = vec![
            b"a".to_vec(),
            b"hello".to_vec(),
            b"file-01234".to_vec(),
            "caf\u{e9}-\u{2713}".as_bytes().to_vec(),
            vec![b'x'; 16],
            vec![b'y'; 17],
            vec![b'z'; 32],
            vec![b'w'; 33],
            (0..255u32).map(|i| b'a' + (i % 26) as u8).collect(),
            (0..40u8).map(|i| 0x80 + i).collect(),
        ];
        names.push(b"..".to_vec());
        let seed_str = "01234567-89ab-cdef-0123-456789abcdef";
        let seed_bytes: Vec<u8> = (0..16)
            .map(|i| u8::from_str_radix(&seed_str.replace('-', "")[i * 2..i * 2 + 2], 16).unwrap())
            .collect();
        let seed: [u32; 4] = std::array::from_fn(|i| {
            u32::from_le_bytes(seed_bytes[i * 4..i * 4 + 4].try_into().unwrap())
        });
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("s");
        let mut lines: Vec<u8> = Vec::new();
        let mut want = Vec::new();
        for v in 0..=5u8 {
            for n in &names {
                for (sd, sarg) in [
                    ([0u32; 4], String::new()),
                    (seed, format!("-s {seed_str} ")),
                ] {
                    lines.extend_from_slice(format!("dx_hash -h {v} {sarg}").as_bytes());
                    lines.extend_from_slice(n);
                    lines.push(b'\n');
                    want.push(hash(n, v, sd).unwrap());
                }
            }
        }
        std::fs::write(&script, &lines).unwrap();
        let out = Command::new("debugfs")
            .arg("-f")
            .arg(&script)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let got: Vec<u32> = text
            .lines()
            .filter_map(|l| l.split(" is 0x").nth(1))
            .map(|h| u32::from_str_radix(h.split(' ').next().unwrap(), 16).unwrap())
            .collect();
        assert_eq!(got.len(), want.len(), "{text}");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                g,
                w,
                "case {i}: {}",
                text.lines().nth(2 * i + 1).unwrap_or("")
            );
        }
    }
}
