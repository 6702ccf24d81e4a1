"""Roll the per-sample stats up into one table at the project root."""

import csv

from thot import ThotProject

db = ThotProject()
rows = []
for asset in db.find_assets({'type': 'stats'}):
    with open(asset.file) as fh:
        values = dict(line.strip().split(',', 1) for line in fh if ',' in line)
    sample = db.find_container({'_id': asset.parent})
    rows.append({
        'sample': asset.parent.rsplit('/', 2)[-2] + '/' + sample.name,
        'temperature_c': sample.metadata['temperature_c'],
        'mean_time_s': values.get('time_s', ''),
    })

path = db.add_asset({'type': 'summary', 'name': 'Summary', 'file': 'summary.csv'}, 'summary')
with open(path, 'w', newline='') as fh:
    writer = csv.DictWriter(fh, fieldnames=['sample', 'temperature_c', 'mean_time_s'])
    writer.writeheader()
    writer.writerows(sorted(rows, key=lambda r: r['sample']))
