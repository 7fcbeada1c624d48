<?php
// Writes a key file (YAML) for a dbconfig-like tree of about $argv[1]
// bytes once rendered as JSON, with "serial" = $argv[2].
//   php gen-keys.php 10000 1 > keys.yaml
$target = (int)($argv[1] ?? 10000);
$serial = (string)($argv[2] ?? '1');
$out = "dbconfig:\n  serial: \"$serial\"\n";
$sections = [];
$host = 1000;
$size = 0;
for ($s = 1; $size < $target; $s++) {
    $hosts = [];
    for ($i = 0; $i < 8 && $size < $target; $i++, $host++) {
        $hosts[] = "db$host";
        $size += 66; // its load, address and (for one in 8) group load, as pretty JSON
    }
    $sections["s$s"] = $hosts;
}
$out .= "  masters:\n";
foreach ($sections as $s => $hosts) {
    $out .= "    $s: \"{$hosts[0]}\"\n";
}
$out .= "  sectionLoads:\n";
foreach ($sections as $s => $hosts) {
    $out .= "    $s:\n";
    foreach ($hosts as $i => $h) {
        $out .= "      $h: \"" . ($i === 0 ? 0 : 100 + 50 * ($i % 3)) . "\"\n";
    }
}
$out .= "  groupLoadsBySection:\n";
foreach ($sections as $s => $hosts) {
    $out .= "    $s:\n      vslow:\n        " . end($hosts) . ": \"100\"\n";
}
$out .= "  hostsByName:\n";
foreach ($sections as $hosts) {
    foreach ($hosts as $h) {
        $n = (int)substr($h, 2);
        $out .= "    $h: \"10.64." . intdiv($n, 250) % 250 . "." . $n % 250 . "\"\n";
    }
}
echo $out;
