//! Small device tree queries the guests share: the RAM node, the root `model` (the instance name
//! under the hypervisor) and `key=value` words of `/chosen/bootargs`.

/// The guest's DT (`None` if `dtb` holds no valid one).
fn parse(dtb: usize) -> Option<fdt::Fdt<'static>> {
    // SAFETY: the boot protocol passes the DTB address in x0; `from_ptr` checks the header. The
    // guests never overwrite the DTB while they look at it.
    unsafe { fdt::Fdt::from_ptr(dtb as *const u8) }.ok()
}

/// `(base, size)` of the first region of the first `/memory` node.
pub fn memory(dtb: usize) -> Option<(usize, usize)> {
    let region = parse(dtb)?.find_node("/memory")?.reg()?.next()?;
    Some((region.starting_address as usize, region.size?))
}

/// Total size in bytes of the DT blob at `dtb` (0 if there is none).
pub fn total_size(dtb: usize) -> usize {
    parse(dtb).map_or(0, |fdt| fdt.total_size())
}

/// The root node's `model` string (the instance name under the hypervisor), passed to `f`
/// (`""` if there is none).
pub fn with_model<R>(dtb: usize, f: impl FnOnce(&str) -> R) -> R {
    let fdt = parse(dtb);
    let model = fdt
        .as_ref()
        .and_then(|fdt| fdt.find_node("/"))
        .and_then(|root| root.property("model"))
        .and_then(|p| p.as_str())
        .unwrap_or("");
    f(model)
}

/// The value of the first `key=<decimal>` word of `/chosen/bootargs`, if there is one that parses.
pub fn bootarg_u64(dtb: usize, key: &str) -> Option<u64> {
    let fdt = parse(dtb)?;
    let bootargs = fdt.find_node("/chosen")?.property("bootargs")?.as_str()?;
    bootargs
        .split_ascii_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
        .and_then(|value| value.parse().ok())
}
