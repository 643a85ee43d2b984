"""The pure-Python KPL (aiokpl) sending kpld-bench's workload to a Kinesis
endpoint: aggregation on, its own per-shard rate limits lifted (the double
enforces none, as for kpld), every record's outcome awaited."""

import asyncio

from aiokpl import Config, Producer

from common import Meter, parse_args, workload


async def main():
    args = parse_args(__doc__)
    keys, data = workload(args)
    cfg = Config(
        region="us-east-1",
        endpoint_url=args.endpoint,
        verify_ssl=False,
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        rate_limit_records_per_sec_per_shard=1e12,
        rate_limit_bytes_per_sec_per_shard=1e15,
    )
    nkeys = len(keys)
    with Meter() as m:
        async with Producer(cfg) as p:
            outcomes = []
            for i in range(args.records):
                outcomes.append(
                    await p.put_record(stream=args.stream, partition_key=keys[i % nkeys], data=data)
                )
            await p.flush()
            results = [await o.wait() for o in outcomes]
    ok = sum(1 for r in results if r.success)
    m.report("aiokpl 0.2.0", args, args.records, ok)


if __name__ == "__main__":
    asyncio.run(main())
