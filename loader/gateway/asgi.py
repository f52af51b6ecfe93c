"""The app for uvicorn worker processes (`--workers N`): settings from the environment."""

from loader import logs
from loader.gateway.app import create_app
from loader.process import die_with_parent
from loader.settings import Settings

die_with_parent()
_settings = Settings.from_env()
logs.setup(_settings.log_json)
app = create_app(_settings)
