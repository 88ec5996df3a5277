pub struct Tracker;
