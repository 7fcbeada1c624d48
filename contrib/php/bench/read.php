<?php
// Per-read cost, in one php process: argv: MODE PATH ITERATIONS.
//   json    json_decode(file_get_contents()) on every read        (a)
//   apcu    LiveconfConfig::load(): stat + apcu_fetch             (b)
//   include include of the PHP file (opcache settings from -d)    (c)
//   helper  LiveconfConfig::includePhp(): stat + small apcu_fetch + include
// Each read is one "request": in php-fpm, APCu and opcache live in shared
// memory across requests as they live across iterations of this loop;
// what a request adds around it (startup, autoloading) is not counted.
require __DIR__ . '/../LiveconfConfig.php';
[, $mode, $path, $n] = $argv;
$n = (int)$n;
$read = match ($mode) {
    'json' => static fn () => json_decode(file_get_contents($path), true, 512, JSON_THROW_ON_ERROR),
    'apcu' => static fn () => LiveconfConfig::load($path),
    'include' => static fn () => include $path,
    'helper' => static fn () => LiveconfConfig::includePhp($path),
};
// Warm up (the first read parses, compiles or stores), and check.
$first = $read();
if (!isset($first['serial'])) {
    fwrite(STDERR, "$path: no serial\n");
    exit(1);
}
for ($i = 0; $i < 100; $i++) {
    $x = $read();
}
$samples = [];
$t0 = hrtime(true);
for ($i = 0; $i < $n; $i++) {
    $t = hrtime(true);
    $x = $read();
    // Touch the data, as a request would.
    $x = $x['serial'];
    $samples[] = hrtime(true) - $t;
}
$total = hrtime(true) - $t0;
sort($samples);
$cached = function_exists('opcache_is_script_cached') && opcache_is_script_cached($path);
printf(
    "%s %.2f %.2f %.2f %s\n",
    $mode,
    $total / $n / 1000,
    $samples[intdiv($n, 2)] / 1000,
    $samples[(int)($n * 0.99)] / 1000,
    $cached ? 'cached' : '-'
);
