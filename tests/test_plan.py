from alpaca_jobs.train.plan import StepPlan


def test_every_example_once_per_epoch_and_equal_micro_steps_per_process():
    plan = StepPlan(num_examples=175, global_batch_size=16, micro_batch_size=4, world_size=2, epochs=3, seed=7)
    assert plan.steps_per_epoch == 11 and plan.total_steps == 33 and plan.grad_accum_steps == 2
    for epoch in range(3):
        seen = []
        for step in range(epoch * 11, (epoch + 1) * 11):
            per_rank = [plan.micro_batches(step, r) for r in range(2)]
            assert all(len(mbs) == 2 for mbs in per_rank)  # same number of passes on every process
            seen += [i for mbs in per_rank for mb in mbs for i in mb]
            assert sorted(i for mbs in per_rank for mb in mbs for i in mb) == sorted(plan.step_examples(step))
        assert sorted(seen) == list(range(175))
    assert plan.epoch_order(0) != plan.epoch_order(1)


def test_plan_is_a_pure_function_of_its_inputs():
    a = StepPlan(100, 8, 2, 2, 2, seed=1)
    b = StepPlan(100, 8, 2, 2, 2, seed=1)
    assert [a.micro_batches(s, 1) for s in range(a.total_steps)] == [b.micro_batches(s, 1) for s in range(b.total_steps)]
    assert StepPlan(100, 8, 2, 2, 2, seed=1, max_steps=5).total_steps == 5
