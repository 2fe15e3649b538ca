//! Reading the host DTB into a typed [`Board`].

use alloc::borrow::ToOwned;
use alloc::string::String;
use alloc::vec::Vec;
use core::iter;

use fdt::Fdt;
use fdt::node::FdtNode;

use crate::{DtError, MemRange, subtract};

pub(crate) const FDT_MAGIC: u32 = 0xd00d_feed;
const HEADER_LEN: usize = 40;
const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;
/// The `fdt` crate's node walker keeps a fixed 64-entry parent stack.
const MAX_DEPTH: usize = 63;
const GICV3_COMPATIBLE: &[&str] = &["arm,gic-v3"];
const GICV2_COMPATIBLE: &[&str] = &["arm,cortex-a15-gic", "arm,gic-400"];
const TIMER_COMPATIBLE: &[&str] = &["arm,armv8-timer", "arm,armv7-timer"];
const PSCI_COMPATIBLE: &[&str] = &["arm,psci-1.0", "arm,psci-0.2"];
const PL011_COMPATIBLE: &[&str] = &["arm,pl011"];
const VIRTIO_MMIO_COMPATIBLE: &[&str] = &["virtio,mmio"];
const PM_WATCHDOG_COMPATIBLE: &[&str] = &["brcm,bcm2835-pm-wdt", "brcm,bcm2835-pm"];

/// The host board as described by its DTB.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Board {
    /// Root `model` string.
    pub model: Option<String>,
    /// Root `compatible` strings, most specific first.
    pub compatible: Vec<String>,
    /// RAM from every `/memory` node.
    pub memory: Vec<MemRange>,
    /// The memory-reservation block plus `/reserved-memory` children that have a `reg`.
    pub reserved: Vec<MemRange>,
    /// CPUs under `/cpus`, in DT order.
    pub cpus: Vec<Cpu>,
    /// The interrupt controller.
    pub gic: GicDescription,
    /// The console UART (from `/chosen/stdout-path`, else the first PL011).
    pub uart: Option<Uart>,
    /// A second PL011 besides the console (QEMU virt's UART1 when given a second `-serial`):
    /// where the management shell answers in JSON.
    pub management_uart: Option<Uart>,
    /// The architected timer's interrupts.
    pub timer: Option<TimerPpis>,
    /// The PSCI conduit, if the board has PSCI 0.2 or later.
    pub psci: Option<Psci>,
    /// The `/chosen` node.
    pub chosen: Chosen,
    /// Every virtio-mmio transport slot, in DT order (most are empty on QEMU virt: which one
    /// holds a device shows only in its registers).
    pub virtio_mmio: Vec<VirtioMmio>,
    /// The BCM2835-family power-management block with the watchdog (`brcm,bcm2835-pm-wdt`):
    /// its first `reg`, where the Raspberry Pi's reset and power-off go.
    pub pm_watchdog: Option<MemRange>,
}

/// A virtio-mmio transport slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VirtioMmio {
    /// Base of its register window.
    pub base: u64,
    /// Size of its register window.
    pub size: u64,
    /// Its interrupt (GIC INTID), if the DT gives one.
    pub irq: Option<u32>,
}

impl Board {
    /// RAM minus all reserved ranges.
    pub fn usable_memory(&self) -> Vec<MemRange> {
        subtract(&self.memory, &self.reserved)
    }
}

/// One CPU node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cpu {
    /// The MPIDR affinity fields (the node's `reg`).
    pub mpidr: u64,
    /// How the CPU is brought up.
    pub enable_method: EnableMethod,
}

/// A CPU's `enable-method`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnableMethod {
    /// PSCI CPU_ON.
    Psci,
    /// Spin table: write the entry point to `release_addr`, then SEV.
    SpinTable {
        /// The `cpu-release-addr` property.
        release_addr: u64,
    },
    /// Missing or anything else.
    Other,
}

/// The interrupt controller, with interrupt numbers as INTIDs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GicDescription {
    /// "arm,gic-v3".
    V3 {
        /// GICD frame.
        distributor: MemRange,
        /// GICR regions (`#redistributor-regions` of them).
        redistributors: Vec<MemRange>,
        /// Maintenance interrupt INTID, if described (only where EL2 is available).
        maintenance_irq: Option<u32>,
    },
    /// "arm,cortex-a15-gic" or "arm,gic-400".
    V2 {
        /// GICD frame.
        distributor: MemRange,
        /// GICC frame.
        cpu_interface: MemRange,
        /// GICH frame (virtualization control), if described.
        hyp_interface: Option<MemRange>,
        /// GICV frame (virtual CPU interface), if described.
        virtual_cpu_interface: Option<MemRange>,
        /// Maintenance interrupt INTID, if described.
        maintenance_irq: Option<u32>,
    },
}

/// The console UART.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Uart {
    /// MMIO base address.
    pub base: u64,
    /// MMIO size.
    pub size: u64,
    /// Programming model.
    pub kind: UartKind,
    /// INTID, if the UART's interrupt goes to the GIC.
    pub irq: Option<u32>,
}

/// UART programming model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UartKind {
    /// ARM PrimeCell PL011.
    Pl011,
    /// Anything else (e.g. the BCM2835 mini UART).
    Other,
}

/// Architected timer interrupts as INTIDs (16 + PPI number).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerPpis {
    /// Secure EL1 physical timer.
    pub secure_phys: u32,
    /// Non-secure EL1 physical timer.
    pub nonsecure_phys: u32,
    /// Virtual timer.
    pub virtual_: u32,
    /// EL2 (hypervisor) physical timer.
    pub hyp: u32,
}

/// The PSCI firmware interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Psci {
    /// Conduit used to call PSCI.
    pub method: PsciMethod,
}

/// PSCI conduit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsciMethod {
    /// Secure monitor call.
    Smc,
    /// Hypervisor call.
    Hvc,
}

/// Contents of `/chosen`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chosen {
    /// Kernel command line.
    pub bootargs: Option<String>,
    /// `stdout-path` as written (may be an alias and carry ":115200n8"-style options).
    pub stdout_path: Option<String>,
    /// Initrd from `linux,initrd-start` / `linux,initrd-end`.
    pub initrd: Option<MemRange>,
}

/// Total size of a DTB from the first 40 bytes of its header.
pub fn dtb_total_size(header: &[u8]) -> Result<usize, DtError> {
    if header.len() < HEADER_LEN {
        return Err(DtError::BadHeader("shorter than 40 bytes"));
    }
    if be_u32(header, 0) != Some(FDT_MAGIC) {
        return Err(DtError::BadHeader("bad magic"));
    }
    let total = be_u32(header, 4).unwrap_or(0) as usize;
    if total < HEADER_LEN {
        return Err(DtError::BadHeader("total size smaller than the header"));
    }
    Ok(total)
}

/// Parses a host DTB into a [`Board`].
pub fn parse_board(dtb: &[u8]) -> Result<Board, DtError> {
    let stripped = without_nops(dtb);
    let dtb = stripped.as_deref().unwrap_or(dtb);
    check_header(dtb)?;
    let fdt = Fdt::new(dtb).map_err(|_| DtError::BadHeader("rejected by the fdt parser"))?;
    let tree = Tree::new(&fdt)?;
    let root = &tree.nodes[0];

    let mut reserved: Vec<MemRange> = fdt
        .memory_reservations()
        .map(|r| MemRange::new(r.address() as usize as u64, r.size() as u64))
        .collect();
    for node in tree
        .nodes
        .iter()
        .filter(|n| n.parent_name() == Some("reserved-memory"))
    {
        if node.prop("reg").is_some() {
            reserved.extend(node.reg("/reserved-memory child")?);
        }
    }

    let chosen = tree.by_path("/chosen");
    Ok(Board {
        model: root.str_prop("model").map(ToOwned::to_owned),
        compatible: root.strings("compatible").map(ToOwned::to_owned).collect(),
        memory: memory(&tree)?,
        reserved,
        cpus: cpus(&tree)?,
        gic: gic(&tree)?,
        uart: uart(&tree, chosen)?,
        management_uart: management_uart(&tree, chosen)?,
        timer: timer(&tree)?,
        psci: psci(&tree)?,
        chosen: chosen.map(parse_chosen).transpose()?.unwrap_or_default(),
        virtio_mmio: virtio_mmio(&tree)?,
        pm_watchdog: tree
            .compatible(PM_WATCHDOG_COMPATIBLE)
            .map(|node| node.reg("power-management watchdog"))
            .transpose()?
            .and_then(|reg| reg.first().copied()),
    })
}

/// The `/chosen/bootargs` of `dtb`, read on their own: for the early console when the rest of
/// the device tree cannot be made into a [`Board`]. `None` if the DTB is unreadable or has none.
pub fn raw_bootargs(dtb: &[u8]) -> Option<&str> {
    check_header(dtb).ok()?;
    let fdt = Fdt::new(dtb).ok()?;
    fdt.find_node("/chosen")?.property("bootargs")?.as_str()
}

/// The PL011 base of an `earlycon=pl011,[mmio32,]<address>` in `bootargs` (Linux's syntax).
pub fn earlycon_pl011(bootargs: &str) -> Option<u64> {
    let options = bootargs
        .split_ascii_whitespace()
        .find_map(|word| word.strip_prefix("earlycon=pl011,"))?;
    let address = options.rsplit(',').next()?;
    let hex = address
        .strip_prefix("0x")
        .or_else(|| address.strip_prefix("0X"))?;
    u64::from_str_radix(hex, 16).ok()
}

/// A copy of `dtb` with the NOP tokens taken out of its structure block, or `None` if it has
/// none (or is malformed: [`check_header`] then says how). libfdt leaves NOPs wherever it
/// deleted or shrank something (QEMU's and U-Boot's edits of a board's DTB do), and the `fdt`
/// crate misreads them anywhere but right before the end of a node.
fn without_nops(dtb: &[u8]) -> Option<Vec<u8>> {
    let field = |i: usize| be_u32(dtb, i * 4).map(|value| value as usize);
    let (off_struct, size_struct) = (field(2)?, field(9)?);
    let block = dtb.get(off_struct..off_struct.checked_add(size_struct)?)?;
    let mut kept = Vec::with_capacity(block.len());
    let (mut pos, mut stripped) = (0usize, false);
    loop {
        let length = match be_u32(block, pos)? {
            FDT_BEGIN_NODE => {
                let name = block.get(pos + 4..)?.iter().position(|&b| b == 0)?;
                4 + (name + 1).next_multiple_of(4)
            }
            FDT_PROP => 12 + (be_u32(block, pos + 4)? as usize).next_multiple_of(4),
            FDT_END_NODE | FDT_END => 4,
            FDT_NOP => {
                stripped = true;
                pos += 4;
                continue;
            }
            _ => return None,
        };
        kept.extend_from_slice(block.get(pos..pos.checked_add(length)?)?);
        if be_u32(block, pos) == Some(FDT_END) {
            break;
        }
        pos += length;
    }
    if !stripped {
        return None;
    }
    // Up to the end of the last block only: loaders pad DTBs (QEMU's to 1 MiB), and this copy
    // is made on the hypervisor's small boot heap.
    let (off_strings, size_strings, off_rsvmap) = (field(3)?, field(8)?, field(4)?);
    let end = (off_struct + size_struct)
        .max(off_strings.checked_add(size_strings)?)
        .max(off_rsvmap.checked_add(16)?);
    let mut copy = dtb.get(..end)?.to_vec();
    copy[off_struct..off_struct + kept.len()].copy_from_slice(&kept);
    copy[4..8].copy_from_slice(&(end as u32).to_be_bytes());
    copy[36..40].copy_from_slice(&(kept.len() as u32).to_be_bytes());
    Some(copy)
}

/// Checks the header fields the `fdt` crate would otherwise trust (it slices with them).
pub(crate) fn check_header(dtb: &[u8]) -> Result<(), DtError> {
    let total = dtb_total_size(dtb)?;
    if total > dtb.len() {
        return Err(DtError::BadHeader("total size exceeds the buffer"));
    }
    let field = |i: usize| be_u32(dtb, i * 4).unwrap_or(0) as usize;
    let (off_struct, off_strings, off_rsvmap) = (field(2), field(3), field(4));
    let (version, last_comp) = (field(5), field(6));
    let (size_strings, size_struct) = (field(8), field(9));
    if version < 16 || last_comp > 17 {
        return Err(DtError::BadHeader("unsupported version"));
    }
    let within = |off: usize, len: usize| off.checked_add(len).is_some_and(|end| end <= total);
    if !within(off_struct, size_struct) {
        return Err(DtError::BadHeader("structure block out of bounds"));
    }
    if !within(off_strings, size_strings) {
        return Err(DtError::BadHeader("strings block out of bounds"));
    }
    if !within(off_rsvmap, 16) {
        return Err(DtError::BadHeader("memory reservation block out of bounds"));
    }
    check_structure(
        &dtb[off_struct..off_struct + size_struct],
        &dtb[off_strings..off_strings + size_strings],
    )
}

/// Walks the structure block so that the `fdt` crate, which panics on malformed input,
/// only ever sees well-formed tokens, names and property lengths.
fn check_structure(block: &[u8], strings: &[u8]) -> Result<(), DtError> {
    let bad = |why| Err(DtError::BadStructure(why));
    let c_str = |bytes: &[u8], at: usize| {
        let tail = bytes.get(at..)?;
        let len = tail.iter().position(|&b| b == 0)?;
        core::str::from_utf8(&tail[..len]).ok().map(|_| len)
    };
    let (mut pos, mut depth, mut had_child) = (0usize, 0usize, false);
    loop {
        let Some(token) = be_u32(block, pos) else {
            return bad("truncated");
        };
        pos += 4;
        match token {
            FDT_BEGIN_NODE => {
                let Some(len) = c_str(block, pos) else {
                    return bad("node name not NUL-terminated UTF-8");
                };
                pos = (pos + len + 1).next_multiple_of(4);
                depth += 1;
                had_child = false;
                if depth > MAX_DEPTH {
                    return bad("nodes nested too deeply");
                }
            }
            FDT_END_NODE if depth > 0 => {
                depth -= 1;
                had_child = true;
            }
            FDT_PROP if depth > 0 && !had_child => {
                let (Some(len), Some(name)) = (be_u32(block, pos), be_u32(block, pos + 4)) else {
                    return bad("truncated property");
                };
                pos += 8;
                if c_str(strings, name as usize).is_none() {
                    return bad("bad property name offset");
                }
                pos = match pos
                    .checked_add(len as usize)
                    .filter(|&end| end <= block.len())
                {
                    Some(end) => end.next_multiple_of(4),
                    None => return bad("property runs past the structure block"),
                };
            }
            FDT_NOP => {
                // The fdt crate skips NOPs reliably only right before the end of a node.
                let next = (pos..).step_by(4).map(|p| be_u32(block, p));
                if !matches!(
                    next.into_iter().find(|t| *t != Some(FDT_NOP)).flatten(),
                    Some(FDT_END_NODE | FDT_END)
                ) {
                    return bad("NOP token inside a node's properties or children");
                }
            }
            FDT_END if depth == 0 && pos > 4 => return Ok(()),
            _ => return bad("unexpected token"),
        }
    }
}

fn memory(tree: &Tree) -> Result<Vec<MemRange>, DtError> {
    let mut nodes = tree.nodes.iter().filter(|n| {
        n.parents.len() == 1
            && (n.str_prop("device_type") == Some("memory") || n.base_name() == "memory")
    });
    let first = nodes.next().ok_or(DtError::MissingNode("/memory"))?;
    let mut ranges = Vec::new();
    for node in iter::once(first).chain(nodes) {
        ranges.extend(node.reg("/memory")?.into_iter().filter(|r| r.size != 0));
    }
    Ok(ranges)
}

fn cpus(tree: &Tree) -> Result<Vec<Cpu>, DtError> {
    let cpus = tree.by_path("/cpus").ok_or(DtError::MissingNode("/cpus"))?;
    let address_cells = cell_sizes(cpus.node).0;
    if !(1..=2).contains(&address_cells) {
        return Err(DtError::bad("/cpus", "#address-cells"));
    }
    let list: Vec<Cpu> = tree
        .nodes
        .iter()
        .filter(|n| n.parents.len() == 2 && n.parent_name() == Some("cpus"))
        .filter(|n| n.str_prop("device_type") == Some("cpu"))
        .map(|n| {
            let reg = n.prop("reg").ok_or(DtError::missing("cpu", "reg"))?;
            let mpidr = cells(reg)
                .and_then(|c| join(c.get(..address_cells)?))
                .ok_or(DtError::bad("cpu", "reg"))?;
            let enable_method = match n.str_prop("enable-method") {
                Some("psci") => EnableMethod::Psci,
                Some("spin-table") => EnableMethod::SpinTable {
                    release_addr: n
                        .prop("cpu-release-addr")
                        .and_then(be_uint)
                        .ok_or(DtError::missing("cpu", "cpu-release-addr"))?,
                },
                _ => EnableMethod::Other,
            };
            Ok(Cpu {
                mpidr,
                enable_method,
            })
        })
        .collect::<Result<_, DtError>>()?;
    if list.is_empty() {
        return Err(DtError::MissingNode("/cpus/cpu"));
    }
    Ok(list)
}

fn gic(tree: &Tree) -> Result<GicDescription, DtError> {
    if let Some(node) = tree.compatible(GICV3_COMPATIBLE) {
        let regs = node.reg("GIC")?;
        let count = match node.prop("#redistributor-regions") {
            Some(v) => be_uint(v)
                .and_then(|n| usize::try_from(n).ok())
                .filter(|&n| n >= 1)
                .ok_or(DtError::bad("GIC", "#redistributor-regions"))?,
            None => 1,
        };
        let redistributors = regs
            .get(1..=count)
            .ok_or(DtError::bad("GIC", "reg"))?
            .to_vec();
        return Ok(GicDescription::V3 {
            distributor: regs[0],
            redistributors,
            maintenance_irq: tree.first_intid(node),
        });
    }
    let node = tree
        .compatible(GICV2_COMPATIBLE)
        .ok_or(DtError::MissingNode("GIC"))?;
    let regs = node.reg("GIC")?;
    if regs.len() < 2 {
        return Err(DtError::bad("GIC", "reg"));
    }
    Ok(GicDescription::V2 {
        distributor: regs[0],
        cpu_interface: regs[1],
        hyp_interface: regs.get(2).copied(),
        virtual_cpu_interface: regs.get(3).copied(),
        maintenance_irq: tree.first_intid(node),
    })
}

/// The UART node `node` as a [`Uart`].
fn uart_of(tree: &Tree, node: &Node) -> Result<Uart, DtError> {
    let reg = *node
        .reg("UART")?
        .first()
        .ok_or(DtError::bad("UART", "reg"))?;
    Ok(Uart {
        base: reg.base,
        size: reg.size,
        kind: if node.is_compatible(PL011_COMPATIBLE) {
            UartKind::Pl011
        } else {
            UartKind::Other
        },
        irq: tree.first_intid(node),
    })
}

fn virtio_mmio(tree: &Tree) -> Result<Vec<VirtioMmio>, DtError> {
    let mut slots = Vec::new();
    for node in tree
        .nodes
        .iter()
        .filter(|n| n.is_compatible(VIRTIO_MMIO_COMPATIBLE))
    {
        let reg = *node
            .reg("virtio-mmio")?
            .first()
            .ok_or(DtError::bad("virtio-mmio", "reg"))?;
        slots.push(VirtioMmio {
            base: reg.base,
            size: reg.size,
            irq: tree.first_intid(node),
        });
    }
    Ok(slots)
}

/// The first PL011 that is not the console.
fn management_uart(tree: &Tree, chosen: Option<&Node>) -> Result<Option<Uart>, DtError> {
    let console = uart(tree, chosen)?.map(|uart| uart.base);
    for node in tree
        .nodes
        .iter()
        .filter(|n| n.is_compatible(PL011_COMPATIBLE))
    {
        let candidate = uart_of(tree, node)?;
        if Some(candidate.base) != console {
            return Ok(Some(candidate));
        }
    }
    Ok(None)
}

fn uart(tree: &Tree, chosen: Option<&Node>) -> Result<Option<Uart>, DtError> {
    let stdout = chosen
        .and_then(|c| c.str_prop("stdout-path"))
        .map(|p| p.split(':').next().unwrap_or(p))
        .and_then(|p| match p.starts_with('/') {
            true => Some(p),
            false => tree.by_path("/aliases")?.str_prop(p),
        })
        .and_then(|p| tree.by_path(p));
    let Some(node) = stdout.or_else(|| tree.compatible(PL011_COMPATIBLE)) else {
        return Ok(None);
    };
    uart_of(tree, node).map(Some)
}

fn timer(tree: &Tree) -> Result<Option<TimerPpis>, DtError> {
    let Some(node) = tree.compatible(TIMER_COMPATIBLE) else {
        return Ok(None);
    };
    // Secure, non-secure physical, virtual, hypervisor; a fifth (EL2 virtual) may follow.
    let ids = tree.intids(node).unwrap_or_default();
    let Some(&[Some(secure), Some(phys), Some(virt), Some(hyp)]) = ids.get(..4) else {
        return Err(DtError::bad("timer", "interrupts"));
    };
    Ok(Some(TimerPpis {
        secure_phys: secure,
        nonsecure_phys: phys,
        virtual_: virt,
        hyp,
    }))
}

fn psci(tree: &Tree) -> Result<Option<Psci>, DtError> {
    let Some(node) = tree.compatible(PSCI_COMPATIBLE) else {
        return Ok(None);
    };
    let method = match node.str_prop("method") {
        Some("smc") => PsciMethod::Smc,
        Some("hvc") => PsciMethod::Hvc,
        Some(_) => return Err(DtError::bad("/psci", "method")),
        None => return Err(DtError::missing("/psci", "method")),
    };
    Ok(Some(Psci { method }))
}

fn parse_chosen(node: &Node) -> Result<Chosen, DtError> {
    let bound = |name: &'static str| {
        node.prop(name)
            .map(|v| be_uint(v).ok_or(DtError::bad("/chosen", name)))
            .transpose()
    };
    let initrd = match (bound("linux,initrd-start")?, bound("linux,initrd-end")?) {
        (Some(start), Some(end)) => Some(MemRange::new(
            start,
            end.checked_sub(start)
                .ok_or(DtError::bad("/chosen", "linux,initrd-end"))?,
        )),
        _ => None,
    };
    Ok(Chosen {
        bootargs: node.str_prop("bootargs").map(ToOwned::to_owned),
        stdout_path: node.str_prop("stdout-path").map(ToOwned::to_owned),
        initrd,
    })
}

/// A node with its ancestors (root first), which the `fdt` crate does not keep.
struct Node<'b, 'a> {
    node: FdtNode<'b, 'a>,
    parents: Vec<FdtNode<'b, 'a>>,
}

impl<'a> Node<'_, 'a> {
    fn prop(&self, name: &str) -> Option<&'a [u8]> {
        self.node.property(name).map(|p| p.value)
    }

    /// A string property up to its first NUL.
    fn str_prop(&self, name: &str) -> Option<&'a str> {
        let value = self.prop(name)?;
        let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
        core::str::from_utf8(&value[..end]).ok()
    }

    /// The non-empty strings of a NUL-separated string-list property.
    fn strings(&self, name: &str) -> impl Iterator<Item = &'a str> {
        let value = self.prop(name).unwrap_or_default();
        value
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .filter_map(|s| core::str::from_utf8(s).ok())
    }

    fn is_compatible(&self, with: &[&str]) -> bool {
        self.strings("compatible").any(|c| with.contains(&c))
    }

    fn base_name(&self) -> &'a str {
        self.node.name.split('@').next().unwrap_or_default()
    }

    fn parent_name(&self) -> Option<&str> {
        let parent = self.parents.last()?;
        parent.name.split('@').next()
    }

    /// `reg` entries, translated through the parents' `ranges` to CPU physical addresses.
    fn reg(&self, label: &'static str) -> Result<Vec<MemRange>, DtError> {
        let bad = DtError::bad(label, "reg");
        let raw = self.prop("reg").ok_or(DtError::missing(label, "reg"))?;
        let (ac, sc) = self.parents.last().map_or((2, 1), |p| cell_sizes(*p));
        let cells =
            cells(raw).filter(|c| ac >= 1 && !c.is_empty() && c.len().is_multiple_of(ac + sc));
        cells
            .ok_or(bad)?
            .chunks(ac + sc)
            .map(|entry| {
                let (addr, size) = entry.split_at(ac);
                let base = join(addr)
                    .and_then(|a| self.translate(a))
                    .ok_or(DtError::bad(label, "reg or parent ranges"))?;
                Ok(MemRange::new(
                    base,
                    join(size).ok_or(DtError::bad(label, "reg"))?,
                ))
            })
            .collect()
    }

    /// Maps a bus address up through every ancestor's `ranges` (absent or empty = identity).
    fn translate(&self, mut addr: u64) -> Option<u64> {
        for i in (1..self.parents.len()).rev() {
            let (bus, up) = (self.parents[i], self.parents[i - 1]);
            let ranges = match bus.property("ranges") {
                Some(p) if !p.value.is_empty() => cells(p.value)?,
                _ => continue,
            };
            let (child_ac, child_sc) = cell_sizes(bus);
            let parent_ac = cell_sizes(up).0;
            let width = child_ac + parent_ac + child_sc;
            if width == 0 {
                return None;
            }
            addr = ranges.chunks_exact(width).find_map(|r| {
                let child = join(&r[..child_ac])?;
                let parent = join(&r[child_ac..child_ac + parent_ac])?;
                let size = join(&r[child_ac + parent_ac..])?;
                let offset = addr.checked_sub(child).filter(|&o| o < size)?;
                offset.checked_add(parent)
            })?;
        }
        Some(addr)
    }
}

/// Every node of the tree in document order; `nodes[0]` is the root.
struct Tree<'b, 'a> {
    nodes: Vec<Node<'b, 'a>>,
}

impl<'b, 'a> Tree<'b, 'a> {
    fn new(fdt: &'b Fdt<'a>) -> Result<Self, DtError> {
        let root = fdt.find_node("/").ok_or(DtError::MissingNode("root"))?;
        let mut nodes = Vec::new();
        let mut stack = alloc::vec![Node {
            node: root,
            parents: Vec::new()
        }];
        while let Some(n) = stack.pop() {
            let mut parents = n.parents.clone();
            parents.push(n.node);
            let children: Vec<_> = n.node.children().collect();
            stack.extend(children.into_iter().rev().map(|c| Node {
                node: c,
                parents: parents.clone(),
            }));
            nodes.push(n);
        }
        Ok(Self { nodes })
    }

    fn compatible(&self, with: &[&str]) -> Option<&Node<'b, 'a>> {
        self.nodes.iter().find(|n| n.is_compatible(with))
    }

    /// Finds a node by absolute path; a component without `@` matches any unit address.
    fn by_path(&self, path: &str) -> Option<&Node<'b, 'a>> {
        let want: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        self.nodes.iter().find(|n| {
            let names = n
                .parents
                .iter()
                .skip(1)
                .map(|p| p.name)
                .chain(iter::once(n.node.name));
            n.parents.len() == want.len()
                && names.zip(&want).all(|(have, want)| {
                    have == *want || (!want.contains('@') && have.split('@').next() == Some(*want))
                })
        })
    }

    fn by_phandle(&self, phandle: u32) -> Option<&Node<'b, 'a>> {
        self.nodes.iter().find(|n| {
            ["phandle", "linux,phandle"]
                .iter()
                .any(|p| n.prop(p).and_then(be_uint) == Some(u64::from(phandle)))
        })
    }

    /// The INTID of the node's first interrupt, if it is an SPI or PPI on the GIC.
    fn first_intid(&self, node: &Node) -> Option<u32> {
        self.intids(node)?.first().copied().flatten()
    }

    /// The node's `interrupts` as INTIDs (`None` for a specifier that is neither SPI nor PPI),
    /// or `None` if it has none or its interrupt parent is not a 3-cell GIC.
    fn intids(&self, node: &Node) -> Option<Vec<Option<u32>>> {
        let raw = cells(node.prop("interrupts")?)?;
        let phandle = iter::once(node.node)
            .chain(node.parents.iter().rev().copied())
            .find_map(|n| n.property("interrupt-parent"))
            .and_then(|p| be_uint(p.value))?;
        let gic = self.by_phandle(u32::try_from(phandle).ok()?)?;
        let is_gic = gic.is_compatible(GICV3_COMPATIBLE) || gic.is_compatible(GICV2_COMPATIBLE);
        if !is_gic || gic.prop("#interrupt-cells").and_then(be_uint) != Some(3) {
            return None;
        }
        let intid = |spec: &[u32]| match spec[0] {
            0 => spec[1].checked_add(32),
            1 => spec[1].checked_add(16),
            _ => None,
        };
        Some(raw.chunks_exact(3).map(intid).collect())
    }
}

/// `#address-cells` and `#size-cells` a node gives its children (defaults 2 and 1).
fn cell_sizes(node: FdtNode) -> (usize, usize) {
    let get = |name, default| {
        node.property(name)
            .and_then(|p| be_uint(p.value))
            .map_or(default, |v| v as usize)
    };
    (get("#address-cells", 2), get("#size-cells", 1))
}

fn be_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    let word = bytes.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_be_bytes(word.try_into().ok()?))
}

/// A property as big-endian 32-bit cells.
fn cells(value: &[u8]) -> Option<Vec<u32>> {
    value.len().is_multiple_of(4).then(|| {
        (0..value.len())
            .step_by(4)
            .filter_map(|i| be_u32(value, i))
            .collect()
    })
}

/// One or two cells combined into a number (more than two cannot be a 64-bit value).
fn join(cells: &[u32]) -> Option<u64> {
    (cells.len() <= 2).then(|| cells.iter().fold(0, |acc, &c| (acc << 32) | u64::from(c)))
}

/// A 1- or 2-cell integer property.
fn be_uint(value: &[u8]) -> Option<u64> {
    cells(value)
        .filter(|c| !c.is_empty())
        .and_then(|c| join(&c))
}
