//! `apply`, tested as the evaluator is: events in, findings and state out.
