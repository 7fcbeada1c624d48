//! Micro-benchmarks of the hot path: store updates and snapshots,
//! dependency matching, rendering, and the installer's compare.
//!
//!     cargo bench --bench micro

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use liveconf::deps::Deps;
use liveconf::resource::{self, Resource};
use liveconf::store::{Change, Key, Snapshot, Val};
use liveconf::templates::TemplateSet;

fn snapshot(n: usize) -> Snapshot {
    let v: Val = Arc::from(&[b'v'; 64][..]);
    Snapshot::from_pairs(
        1,
        (0..n).map(|i| (Key::from(format!("/bench/k{i:07}")), v.clone())),
    )
}

fn fixture(template: &str, resources: usize) -> (tempfile::TempDir, Vec<Resource>, TemplateSet) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("templates")).expect("mkdir");
    std::fs::write(dir.path().join("templates/t.tera"), template).expect("write");
    let mut out = Vec::new();
    for i in 0..resources {
        let p = dir.path().join(format!("r{i}.toml"));
        std::fs::write(
            &p,
            format!(
                "[template]\nsrc = \"t.tera\"\ndest = \"{}/out{i}\"\nprefix = \"/bench\"\nkeys = [\"/k{i:07}\"]\n",
                dir.path().display()
            ),
        )
        .expect("write");
        out.push(
            resource::load(
                &p,
                &dir.path().join("templates"),
                "",
                liveconf::resource::PrefixRule::Join,
            )
            .expect("resource"),
        );
    }
    let t = TemplateSet::load(&dir.path().join("templates"));
    (dir, out, t)
}

fn store(c: &mut Criterion) {
    for n in [1_000usize, 100_000] {
        let mut s = snapshot(n);
        let mut i = 0u64;
        c.bench_function(&format!("store: apply one put, {n} keys"), |b| {
            b.iter(|| {
                i += 1;
                s.apply(Change::Put(
                    Key::from("/bench/k0000500"),
                    Val::from(i.to_le_bytes().to_vec()),
                ))
            })
        });
        c.bench_function(&format!("store: snapshot (clone), {n} keys"), |b| {
            b.iter(|| black_box(s.clone()))
        });
    }
}

fn deps(c: &mut Criterion) {
    for n in [10usize, 1_000] {
        let (_d, res, _) = fixture("x", n);
        let deps = Deps::new(&res);
        c.bench_function(&format!("deps: match one key, {n} resources"), |b| {
            b.iter(|| {
                let mut hit = std::collections::BTreeSet::new();
                deps.affected(black_box("/bench/k0000005/sub/key"), &mut hit);
                hit
            })
        });
    }
}

fn render(c: &mut Criterion) {
    let env = liveconf::render::Env::default();
    for n in [1_000usize, 100_000] {
        let snap = snapshot(n);
        let (_d, res, t) = fixture("{{ getv(key=\"/k0000000\") }}", 1);
        c.bench_function(&format!("render: one getv, {n} keys"), |b| {
            b.iter(|| liveconf::render::render(&res[0], &snap, &t, &env).expect("render"))
        });
    }
    let snap = snapshot(1_000);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("templates")).expect("mkdir");
    std::fs::write(
        dir.path().join("templates/all.tera"),
        "{% for kv in gets(pattern=\"/*\") %}{{ kv.key }} {{ kv.value }}\n{% endfor %}",
    )
    .expect("write");
    let p = dir.path().join("all.toml");
    std::fs::write(
        &p,
        "[template]\nsrc = \"all.tera\"\ndest = \"/tmp/x\"\nprefix = \"/bench\"\nkeys = [\"/\"]\n",
    )
    .expect("write");
    let r = resource::load(
        &p,
        &dir.path().join("templates"),
        "",
        liveconf::resource::PrefixRule::Join,
    )
    .expect("resource");
    let t = TemplateSet::load(&dir.path().join("templates"));
    c.bench_function("render: iterate 1,000 keys with gets", |b| {
        b.iter(|| liveconf::render::render(&r, &snap, &t, &env).expect("render"))
    });
}

fn compare(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    for size in [1_024usize, 1_048_576] {
        let dest = dir.path().join(format!("f{size}"));
        let content = vec![b'x'; size];
        std::fs::write(&dest, &content).expect("write");
        let t = liveconf::install::Target {
            dest,
            mode: None,
            uid: None,
            gid: None,
            create_dirs: false,
            backup: false,
        };
        c.bench_function(
            &format!("install: compare unchanged file, {size} bytes"),
            |b| b.iter(|| t.compare(black_box(&content)).expect("compare")),
        );
    }
}

criterion_group!(benches, store, deps, render, compare);
criterion_main!(benches);
