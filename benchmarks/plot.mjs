// Renders the charts of one benchmark run with gnuplot.
//   node benchmarks/plot.mjs RESULTS.jsonl OUT-DIR
// Writes, for both SVG and PNG:
//   throughput_one_key      pairs/s vs clients on one key, per backend, peers beside lockstore
//   throughput_distinct     the same with a key per client
//   fairness_one_key        longest wait / median wait vs clients on one key
//   handoff_latency         release -> next holder across processes, percentile curves
//   keys_held               pairs/s with 10 .. 10^6 other keys held
import { readFileSync, writeFileSync, mkdirSync, rmSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';

const [resultsPath, outDir] = process.argv.slice(2);
if (!resultsPath || !outDir) {
  console.error('usage: node benchmarks/plot.mjs RESULTS.jsonl OUT-DIR');
  process.exit(64);
}
mkdirSync(outDir, { recursive: true });
const lines = readFileSync(resultsPath, 'utf8').split('\n').filter((line) => line.startsWith('{')).map((line) => JSON.parse(line));

const backends = ['memory', 'sqlite', 'postgres', 'redis'];
const title = { memory: 'in-process', sqlite: 'SQLite (one file)', postgres: 'PostgreSQL', redis: 'Redis' };
const quote = (text) => `"${String(text).replaceAll('"', "'")}"`;

// One data block per series: "x y" lines, blocks separated by two blank lines.
function dataFile(name, series) {
  const path = join(outDir, `${name}.dat`);
  writeFileSync(path, series.map((s) => s.points.map(([x, y]) => `${x} ${y}`).join('\n')).join('\n\n\n') + '\n');
  return path;
}

const plots = [];

function contentionPlot(name, keys, metric, ylabel, logY) {
  const panels = [];
  for (const backend of backends) {
    const rows = lines.filter((l) => l.benchmark === 'contention' && l.backend === backend && (l.workers === 1 || l.keys === keys));
    const clients = [...new Set(rows.map((r) => r.client))].sort((a, b) => (a === 'lockstore' ? -1 : b === 'lockstore' ? 1 : a.localeCompare(b)));
    const series = clients.map((client) => ({
      client,
      points: rows.filter((r) => r.client === client).sort((a, b) => a.workers - b.workers).map((r) => [r.workers, r[metric]]),
    })).filter((s) => s.points.length > 0);
    if (series.length > 0) panels.push({ backend, series });
  }
  if (panels.length === 0) return;
  const file = dataFile(name, panels.flatMap((p) => p.series));
  let index = 0;
  const body = panels.map((panel) => {
    const curves = panel.series.map((s) => `${quote(file)} index ${index++} using 1:2 with linespoints lw 2 title ${quote(s.client)}`);
    return `set title ${quote(title[panel.backend])}\nplot ${curves.join(', \\\n  ')}`;
  }).join('\n');
  plots.push({
    name,
    size: [1100, 800],
    script: `set multiplot layout 2,2 title ${quote(`${ylabel}, ${keys === 'one' ? 'all clients on one key' : 'a key per client'}`)}
set xlabel 'clients (processes; threads or async tasks in-process)'
set ylabel ${quote(ylabel)}
set logscale x 2
${logY ? 'set logscale y' : 'unset logscale y'}
set key top left
set grid
${body}
unset multiplot`,
  });
}

contentionPlot('throughput_one_key', 'one', 'pairs_per_s', 'acquire+release pairs/s', true);
contentionPlot('throughput_distinct', 'distinct', 'pairs_per_s', 'acquire+release pairs/s', true);
contentionPlot('fairness_one_key', 'one', 'max_over_median', 'longest wait / median wait', true);

// A single-panel chart: one curve per series, gnuplot settings given.
function linePlot(name, series, settings) {
  if (series.length === 0) return;
  const file = dataFile(name, series);
  const curves = series.map((s, i) => `${quote(file)} index ${i} using 1:2 with linespoints lw 2 title ${quote(s.client)}`);
  plots.push({ name, size: [900, 600], script: `${settings}\nset key outside right\nset grid\nplot ${curves.join(', \\\n  ')}` });
}

// Handoff latency across processes: one curve per backend and client.
linePlot('handoff_latency',
  lines.filter((l) => l.benchmark === 'handoff_latency' && l.scope === 'processes' && l.p10_us !== undefined).map((r) => ({
    client: `${r.client ?? 'lockstore'} (${r.backend})`,
    points: [[10, r.p10_us], [25, r.p25_us], [50, r.p50_us], [75, r.p75_us], [90, r.p90_us], [99, r.p99_us]].map(([p, us]) => [p, us / 1000]),
  })),
  `set title 'Handoff across processes: release -> the waiting process holds the lock'
set xlabel 'percentile'
set ylabel 'latency (ms)'
set logscale y
set xtics (10, 25, 50, 75, 90, 99)`);

// Acquire cost with many keys held.
{
  const rows = lines.filter((l) => l.benchmark === 'pairs_with_keys_held');
  linePlot('keys_held', backends.map((backend) => ({
    client: title[backend],
    points: rows.filter((r) => r.backend === backend).sort((a, b) => a.held_keys - b.held_keys).map((r) => [r.held_keys, r.pairs_per_s]),
  })).filter((s) => s.points.length > 0),
  `set title 'One client acquire+release pairs/s while other keys are held'
set xlabel 'other keys held'
set ylabel 'pairs/s'
set logscale xy`);
}

for (const plot of plots) {
  for (const [terminal, extension] of [[`svg size ${plot.size[0]},${plot.size[1]} dynamic background rgb 'white'`, 'svg'],
    [`pngcairo size ${plot.size[0]},${plot.size[1]}`, 'png']]) {
    const script = `set terminal ${terminal}\nset output ${quote(join(outDir, `${plot.name}.${extension}`))}\n${plot.script}\n`;
    execFileSync('gnuplot', [], { input: script, stdio: ['pipe', 'inherit', 'inherit'] });
  }
  console.log(`wrote ${join(outDir, plot.name)}.{svg,png}`);
}
for (const plot of plots) rmSync(join(outDir, `${plot.name}.dat`), { force: true });
