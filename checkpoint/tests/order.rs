//! Order and consistency rules the reader enforces.

mod common;

use checkpoint::{EndSummary, Error, InstanceConfig, Page, PageData, Section, SectionKind, Writer};
use common::*;

fn with_end(sections: &[Section]) -> Vec<u8> {
    stream(sections)
}

fn invalid(result: Result<Vec<Section>, Error>, kind: SectionKind, needle: &str) {
    match result {
        Err(Error::Invalid { kind: k, reason }) if k == kind => {
            assert!(reason.contains(needle), "{reason:?} lacks {needle:?}")
        }
        other => panic!("expected invalid {kind}, got {other:?}"),
    }
}

#[test]
fn memory_before_config() {
    let bytes = with_end(&[Section::Memory(memory(&[0])), Section::Config(config())]);
    assert_eq!(
        read_all(&bytes),
        Err(Error::MissingConfig {
            kind: SectionKind::Memory
        })
    );
    let bytes = with_end(&[]);
    assert_eq!(
        read_all(&bytes),
        Err(Error::MissingConfig {
            kind: SectionKind::End
        })
    );
}

#[test]
fn duplicates() {
    let base = vec![Section::Config(config())];
    for extra in [
        Section::Config(config()),
        Section::Vgic(vgic()),
        Section::Pl011(pl011()),
        Section::Paravirt(paravirt()),
    ] {
        let kind = extra.kind();
        let mut sections = base.clone();
        if kind != SectionKind::Config {
            sections.push(extra.clone());
        }
        sections.push(extra);
        assert_eq!(
            read_all(&with_end(&sections)),
            Err(Error::Duplicate { kind }),
            "{kind}"
        );
    }
    let sections = [
        Section::Config(config()),
        Section::Vcpu(Box::new(vcpu(1))),
        Section::Vcpu(Box::new(vcpu(0))),
        Section::Vcpu(Box::new(vcpu(1))),
    ];
    assert_eq!(
        read_all(&with_end(&sections)),
        Err(Error::DuplicateVcpu { index: 1 })
    );
}

#[test]
fn vcpu_out_of_range() {
    let sections = [
        Section::Config(config()),
        Section::Vcpu(Box::new(vcpu(VCPUS))),
    ];
    assert_eq!(
        read_all(&with_end(&sections)),
        Err(Error::VcpuOutOfRange {
            index: VCPUS,
            vcpus: VCPUS
        })
    );
}

#[test]
fn page_index_out_of_range() {
    let sections = [
        Section::Config(config()),
        Section::Memory(memory(&[RAM_PAGES - 1, RAM_PAGES])),
    ];
    assert_eq!(
        read_all(&with_end(&sections)),
        Err(Error::PageOutOfRange {
            index: RAM_PAGES,
            pages: RAM_PAGES
        })
    );
}

#[test]
fn pages_may_be_sent_again() {
    let sections = [
        Section::Config(config()),
        Section::Memory(memory(&[5, 6])),
        Section::Memory(memory(&[5])),
    ];
    assert_eq!(read_all(&with_end(&sections)).unwrap().len(), 4);
}

#[test]
fn raw_page_of_the_wrong_size() {
    let chunk = checkpoint::MemoryChunk {
        pages: vec![Page {
            index: 0,
            data: PageData::Raw(vec![0; 100]),
        }],
    };
    let sections = [Section::Config(config()), Section::Memory(chunk)];
    invalid(
        read_all(&with_end(&sections)),
        SectionKind::Memory,
        "raw with 100 bytes",
    );
}

#[test]
fn data_after_end() {
    let mut bytes = small_stream();
    bytes.push(0);
    assert_eq!(read_all(&bytes), Err(Error::AfterEnd));
    assert_eq!(read_in_pieces(&bytes, &[1]), Err(Error::AfterEnd));

    // A whole valid-looking section after End.
    let mut bytes = small_stream();
    let mut more = Vec::new();
    Writer::new()
        .section(&Section::Pl011(pl011()), &mut more)
        .unwrap();
    bytes.extend_from_slice(&more);
    assert_eq!(read_all(&bytes), Err(Error::AfterEnd));

    // Pushed after End was read: next and finish both refuse.
    let mut reader = checkpoint::Reader::new();
    reader.push(&small_stream());
    while reader.next().unwrap().is_some() {}
    reader.finish().unwrap();
    reader.push(&[1]);
    assert_eq!(reader.finish(), Err(Error::AfterEnd));
    assert_eq!(reader.next(), Err(Error::AfterEnd));
}

#[test]
fn end_counts_must_match() {
    let sections = sample_sections(3);
    for claimed in [
        EndSummary {
            sections: sections.len() as u32 + 1,
            pages: 3,
        },
        EndSummary {
            sections: sections.len() as u32,
            pages: 2,
        },
    ] {
        let mut all = sections.clone();
        all.push(Section::End(claimed));
        let bytes = raw_stream(&all);
        assert_eq!(
            read_all(&bytes),
            Err(Error::EndMismatch {
                claimed,
                actual: EndSummary {
                    sections: sections.len() as u32,
                    pages: 3
                }
            })
        );
    }
}

#[test]
fn missing_end_is_truncated() {
    let bytes = raw_stream(&sample_sections(3));
    assert_eq!(read_all(&bytes), Err(Error::Truncated));
}

#[test]
fn bad_configs() {
    let cases: Vec<(InstanceConfig, &str)> = vec![
        (
            InstanceConfig {
                vcpus: 0,
                ..config()
            },
            "0 vcpus",
        ),
        (
            InstanceConfig {
                vcpus: 65,
                ..config()
            },
            "65 vcpus",
        ),
        (
            InstanceConfig {
                ram_bytes: 0,
                ..config()
            },
            "RAM size",
        ),
        (
            InstanceConfig {
                ram_bytes: 4097,
                ..config()
            },
            "RAM size",
        ),
        (
            InstanceConfig {
                ram_base: 0x100,
                ..config()
            },
            "page aligned",
        ),
        (
            InstanceConfig {
                ram_base: u64::MAX - 4095,
                ..config()
            },
            "address space",
        ),
        (
            InstanceConfig {
                name: String::new(),
                ..config()
            },
            "instance name",
        ),
        (
            InstanceConfig {
                name: "a".repeat(33),
                ..config()
            },
            "instance name",
        ),
        (
            InstanceConfig {
                name: "web db".into(),
                ..config()
            },
            "instance name",
        ),
        (
            InstanceConfig {
                name: "wéb".into(),
                ..config()
            },
            "instance name",
        ),
        (
            InstanceConfig {
                gic_version: 4,
                ..config()
            },
            "GIC version",
        ),
        (
            InstanceConfig {
                spis: 989,
                ..config()
            },
            "SPIs",
        ),
        (
            InstanceConfig {
                counter_frequency: 0,
                ..config()
            },
            "counter frequency",
        ),
    ];
    for (bad, needle) in cases {
        invalid(
            read_all(&with_end(&[Section::Config(bad)])),
            SectionKind::Config,
            needle,
        );
    }
    let fine = InstanceConfig {
        name: "a".repeat(32),
        vcpus: 64,
        ..config()
    };
    assert!(read_all(&with_end(&[Section::Config(fine)])).is_ok());
}

#[test]
fn bad_vgic() {
    let mut few = vgic();
    few.redistributors.pop();
    let mut short = vgic();
    short.redistributors[1].private.pop();
    let mut swapped = vgic();
    swapped.redistributors.swap(0, 1);
    let mut spis = vgic();
    spis.spis.pop();
    for (bad, needle) in [
        (few, "1 redistributors for 2 vcpus"),
        (short, "31 private interrupts"),
        (swapped, "redistributor 0 is for vcpu 1"),
        (spis, "31 SPIs"),
    ] {
        let sections = [Section::Config(config()), Section::Vgic(bad)];
        invalid(read_all(&with_end(&sections)), SectionKind::Vgic, needle);
    }
}

/// The GICv2 form of the sample vGIC: target masks instead of routes, no sleeping
/// redistributors.
fn vgic_v2() -> checkpoint::VgicState {
    let mut vgic = vgic();
    vgic.gic_version = 2;
    for (n, spi) in vgic.spis.iter_mut().enumerate() {
        spi.route = 0;
        spi.targets = (n % 4) as u8;
    }
    for redistributor in &mut vgic.redistributors {
        redistributor.asleep = false;
    }
    vgic
}

fn config_v2() -> InstanceConfig {
    InstanceConfig {
        gic_version: 2,
        ..config()
    }
}

#[test]
fn a_gicv2_vgic_is_read_back() {
    let sections = [Section::Config(config_v2()), Section::Vgic(vgic_v2())];
    let read = read_all(&with_end(&sections)).unwrap();
    assert_eq!(read[1], Section::Vgic(vgic_v2()));
    let eight = InstanceConfig {
        vcpus: 8,
        ..config_v2()
    };
    let mut vgic = vgic_v2();
    vgic.redistributors = (0..8)
        .map(|vcpu| checkpoint::RedistributorState {
            vcpu,
            asleep: false,
            private: vgic.redistributors[0].private.clone(),
        })
        .collect();
    vgic.spis[0].targets = 0x80;
    let sections = [Section::Config(eight), Section::Vgic(vgic)];
    assert!(read_all(&with_end(&sections)).is_ok());
}

#[test]
fn bad_vgic_shape() {
    let mut version = vgic();
    version.gic_version = 4;
    let mut v3_targets = vgic();
    v3_targets.spis[3].targets = 1;
    for (bad, needle) in [
        (version.clone(), "GIC version 4, expected 2 or 3"),
        (vgic_v2(), "a GICv2, but the instance has a GICv3"),
        (v3_targets, "SPI 35 of a GICv3 has GICv2 targets 0x01"),
    ] {
        let sections = [Section::Config(config()), Section::Vgic(bad)];
        invalid(read_all(&with_end(&sections)), SectionKind::Vgic, needle);
    }
    let mut route = vgic_v2();
    route.spis[1].route = 1;
    let mut wide = vgic_v2();
    wide.spis[2].targets = 0b101;
    let mut asleep = vgic_v2();
    asleep.redistributors[1].asleep = true;
    for (bad, needle) in [
        (version, "GIC version 4"),
        (vgic(), "a GICv3, but the instance has a GICv2"),
        (route, "SPI 33 of a GICv2 has a GICv3 route 0x1"),
        (wide, "SPI 34 targets 0x05, but the instance has 2 vcpus"),
        (asleep, "vcpu 1 of a GICv2 has an asleep redistributor"),
    ] {
        let sections = [Section::Config(config_v2()), Section::Vgic(bad)];
        invalid(read_all(&with_end(&sections)), SectionKind::Vgic, needle);
    }
    let nine = InstanceConfig {
        vcpus: 9,
        ..config_v2()
    };
    let mut vgic = vgic_v2();
    vgic.redistributors = (0..9)
        .map(|vcpu| checkpoint::RedistributorState {
            vcpu,
            asleep: false,
            private: vgic.redistributors[0].private.clone(),
        })
        .collect();
    let sections = [Section::Config(nine), Section::Vgic(vgic)];
    invalid(
        read_all(&with_end(&sections)),
        SectionKind::Vgic,
        "a GICv2 for 9 vcpus, at most 8",
    );
}

#[test]
fn bad_pl011_and_paravirt() {
    let mut rx = pl011();
    rx.rx = vec![b'x'; 33];
    let mut line = pl011();
    line.line = vec![b'x'; 257];
    for (bad, needle) in [(rx, "33 received"), (line, "257 bytes")] {
        let sections = [Section::Config(config()), Section::Pl011(bad)];
        invalid(read_all(&with_end(&sections)), SectionKind::Pl011, needle);
    }
    let mut intid = paravirt();
    intid.notice_intid = Some(32 + SPIS);
    let sections = [Section::Config(config()), Section::Paravirt(intid)];
    invalid(
        read_all(&with_end(&sections)),
        SectionKind::Paravirt,
        "INTID 64",
    );
}

#[test]
fn bodies_must_decode_exactly() {
    let mut config_body = postcard::to_allocvec(&config()).unwrap();
    config_body.push(0);
    let mut bytes = header();
    bytes.extend_from_slice(&frame(1, 0, &config_body));
    assert_eq!(
        read_all(&bytes),
        Err(Error::TrailingBytes {
            kind: SectionKind::Config,
            count: 1
        })
    );

    let mut bytes = header();
    bytes.extend_from_slice(&frame(1, 0, &[3, b'w']));
    assert_eq!(
        read_all(&bytes),
        Err(Error::Decode {
            kind: SectionKind::Config
        })
    );

    // A bool that is neither 0 nor 1.
    let body = postcard::to_allocvec(&paravirt()).unwrap();
    let mut bad = body.clone();
    bad[0] = 2;
    let mut bytes = raw_stream(&[Section::Config(config())]);
    bytes.extend_from_slice(&frame(6, 0, &bad));
    assert_eq!(
        read_all(&bytes),
        Err(Error::Decode {
            kind: SectionKind::Paravirt
        })
    );
}

#[test]
fn unknown_kind() {
    let mut bytes = raw_stream(&[Section::Config(config())]);
    bytes.extend_from_slice(&frame(7, 0, &[]));
    let error = read_all(&bytes).unwrap_err();
    assert_eq!(error, Error::UnknownSection(7));
    assert!(
        error
            .to_string()
            .contains("unknown checkpoint section kind 7")
    );
}
