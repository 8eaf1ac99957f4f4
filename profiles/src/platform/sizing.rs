//! Sizing rules of the JVMs and alerts picluster renders: each follows from
//! the container size and an upstream fact named next to it.

/// Trino's memory split for a container of `container_mib`: the heap is 65%
/// (the rest holds the 256 MiB code cache, metaspace, threads and direct
/// buffers); of the heap, 25% is headroom for untracked allocations and 50%
/// the per-query limit, so `max-memory-per-node + headroom < -Xmx`.
pub fn trino_memory(container_mib: u32) -> (u32, u32, u32) {
    let heap = container_mib * 65 / 100 / 64 * 64;
    (heap, heap / 4, heap / 2)
}

/// G1 region size in MiB for a heap of `heap_mib`: the largest power of two
/// (1–32, G1's range) that still cuts the heap into at least 256 regions. The
/// trino chart's fixed 32M (1.42.2 values.yaml) leaves a 1–2 GB heap only
/// 40–60 regions, so humongous objects and mixed collections suffer.
pub fn g1_region_mib(heap_mib: u32) -> u32 {
    let mut size = 32;
    while size > 1 && heap_mib / size < 256 {
        size /= 2;
    }
    size
}

/// NiFi's heap for a container of `container_mib`: 40% rounded down to
/// 64 MiB; the rest is for the capped code cache and metaspace, threads,
/// direct buffers and NiFi's bootstrap JVM in the same container.
pub fn nifi_heap_mib(container_mib: u32) -> u32 {
    container_mib * 40 / 100 / 64 * 64
}
/// Caps of NiFi's non-heap JVM areas (bootstrap.conf java.arg).
pub const NIFI_CODE_CACHE: &str = "128m";
pub const NIFI_METASPACE: &str = "256m";

/// CloudNativePG alert rules that cannot hold with `instances` PostgreSQL
/// instances on Pis (cluster chart 0.8.1 prometheus_rules/): HACritical
/// fires whenever there is no standby, HAWarning with fewer than two, and
/// ZoneSpread counts topology zones, which home nodes do not carry.
pub fn pg_excluded_alerts(instances: u32) -> Vec<&'static str> {
    let mut out = Vec::new();
    if instances < 2 {
        out.push("CNPGClusterHACritical");
    }
    if instances < 3 {
        out.push("CNPGClusterHAWarning");
    }
    out.push("CNPGClusterZoneSpreadWarning");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::budget::sizes;

    #[test]
    fn trino_memory_keeps_query_memory_and_headroom_under_the_heap() {
        for container in [2048, 3072, 4096, 6144] {
            let (heap, headroom, per_node) = trino_memory(container);
            assert!(
                per_node + headroom < heap,
                "{container}: {per_node}+{headroom} vs {heap}"
            );
            assert!(
                heap + 512 <= container,
                "{container}: heap {heap} leaves no room off-heap"
            );
        }
        assert_eq!(trino_memory(3072), (1984, 496, 992));
    }

    #[test]
    fn g1_regions_fit_the_heap() {
        // 1-2 GB heaps get 4M regions (~300-500 of them), never the chart's 32M.
        assert_eq!(g1_region_mib(1280), 4);
        assert_eq!(g1_region_mib(1984), 4);
        assert_eq!(g1_region_mib(3968), 8);
        assert_eq!(g1_region_mib(200), 1);
        for heap in [1280, 1984, 2560, 3968, 9984] {
            assert!(heap / g1_region_mib(heap) >= 256, "{heap}");
        }
    }

    #[test]
    fn nifi_heap_leaves_the_jvm_room() {
        for container in [1536, 2048, 3072, 4096] {
            let heap = nifi_heap_mib(container);
            assert!(heap * 100 <= container * 40, "{container}: {heap}");
            // Heap + the capped code cache and metaspace leave >= 500 MiB for
            // threads, direct buffers, GC structures and the bootstrap JVM.
            assert!(heap + 128 + 256 + 500 <= container, "{container}: {heap}");
        }
        assert_eq!(nifi_heap_mib(2048), 768);
    }

    #[test]
    fn grafana_has_room_beyond_its_gomemlimit() {
        assert!(sizes::GRAFANA.0 >= 512);
    }

    #[test]
    fn ha_alerts_are_excluded_below_their_size() {
        assert_eq!(
            pg_excluded_alerts(1),
            [
                "CNPGClusterHACritical",
                "CNPGClusterHAWarning",
                "CNPGClusterZoneSpreadWarning"
            ]
        );
        assert_eq!(
            pg_excluded_alerts(2),
            ["CNPGClusterHAWarning", "CNPGClusterZoneSpreadWarning"]
        );
        assert_eq!(pg_excluded_alerts(3), ["CNPGClusterZoneSpreadWarning"]);
    }
}
