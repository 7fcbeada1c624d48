<?php
// Reads in a tight loop until the data changes: argv: MODE PATH.
// Prints "ready SERIAL" after the first read, then, at the first read
// that sees another serial, "seen SERIAL UNIX_TIME READS" (microseconds).
require __DIR__ . '/../LiveconfConfig.php';
[, $mode, $path] = $argv;
$read = match ($mode) {
    'apcu' => static fn () => LiveconfConfig::load($path, static function () {}),
    'include' => static fn () => include $path,
    'helper' => static fn () => LiveconfConfig::includePhp($path),
};
$first = $read()['serial'];
echo "ready $first\n";
$reads = 0;
$deadline = microtime(true) + 30;
while (true) {
    $reads++;
    $s = $read()['serial'];
    if ($s !== $first) {
        printf("seen %s %.6f %d\n", $s, microtime(true), $reads);
        exit(0);
    }
    if (($reads & 1023) === 0 && microtime(true) > $deadline) {
        echo "timeout\n";
        exit(1);
    }
}
