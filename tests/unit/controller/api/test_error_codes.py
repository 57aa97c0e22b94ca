"""The problems a route can answer, read from the code it runs."""

from __future__ import annotations

from services.controller.api.error_codes import Raised, models_raise, raised_by
from services.controller.api.schemas.schedules import ScheduleUpdate
from services.controller.ca_bundles.updates import run_update
from services.controller.queueing.jobs import ensure_no_unfinished_job
from services.controller.rules import enrollment_objects
from services.controller.scheduling import timing
from shared.errors import NotFoundError


def test_the_codes_a_function_gives_its_errors_are_found_with_their_statuses():
    assert raised_by([timing.check_timing]) == {
        Raised(422, "schedule_timing_ambiguous"), Raised(422, "cron_invalid"), Raised(422, "schedule_interval_invalid")}


def test_calls_are_followed_through_factories_and_classes_of_the_project():
    def endpoint(name: str):
        if not name:
            raise NotFoundError(f"no {name}", code="thing_not_found")
        timing.Timing(cron=name)  # a dataclass whose __post_init__ checks the timing
        return enrollment_objects.object_columns  # named, not called: not followed

    assert raised_by([endpoint]) == {
        Raised(404, "thing_not_found"), Raised(422, "schedule_timing_ambiguous"), Raised(422, "cron_invalid"),
        Raised(422, "schedule_interval_invalid")}
    # _not_applicable builds the error the function raises
    assert Raised(422, "field_not_applicable") in raised_by([enrollment_objects.object_columns])


def test_an_error_class_names_its_own_code():
    assert Raised(409, "job_in_progress") in raised_by([ensure_no_unfinished_job])


def test_a_code_chosen_at_run_time_is_known_by_its_status_only():
    # The bundle update passes a source's refusal on with the source's code.
    assert Raised(409, None) in raised_by([run_update])


def test_validators_of_a_body_model_are_read():
    assert models_raise([ScheduleUpdate]) == set()  # its fields are checked by the route, not validators
    from services.controller.api.schemas.bulk_enrollments import BulkEnrollmentCreate

    assert models_raise([BulkEnrollmentCreate]) == set()  # a ValueError: the framework's validation_error
